"""Load variant files by path: read, import from the exact source text, and check the declaration's fields.

``arena.runner.check`` then checks the loaded variant against a spec (build, shapes, budget, causality). Every
problem is one ArenaError line that names the file and the reason; nothing is stored for a rejected file.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.resources
import re
import sys
import types
from collections.abc import Iterable
from pathlib import Path

from arena.core.config import did_you_mean
from arena.core.errors import ArenaError
from arena.core.variant import KINDS, MIXERS, Fusion, LoadedVariant, Variant

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def builtin_dir() -> Path:
    """The folder of the shipped variants (variants/ in the repo, ``arena/variants`` when installed)."""
    return Path(str(importlib.resources.files("arena.variants")))


def load_variant(path: str | Path) -> LoadedVariant:
    """Read and import a variant file; raise ArenaError naming the file on any problem with the declaration."""
    p = Path(path)
    try:
        source = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArenaError(f"{p}: no such file; give the path to a variant .py file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArenaError(f"{p}: cannot read it ({exc})") from None
    return load_source(source, str(p))


def load_source(source: str, path: str) -> LoadedVariant:
    """Import a variant from its source text (the child process reloads the exact text the parent hashed)."""
    sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
    _check_declaration_is_last(source, path)
    module = types.ModuleType(f"arena_variant_{sha[:16]}")
    module.__file__ = path
    try:
        code = compile(source, path, "exec")
        # Registered while executing so that dataclasses/typing inside the file can resolve the module.
        sys.modules[module.__name__] = module
        exec(code, module.__dict__)
    except Exception as exc:
        raise ArenaError(f"{path}: does not import: {type(exc).__name__}: {exc}") from None
    finally:
        sys.modules.pop(module.__name__, None)
    decl = module.__dict__.get("VARIANT")
    if decl is None:
        raise ArenaError(f"{path}: no declaration; end the file with VARIANT = Variant(name=..., kind=..., ...)")
    if not isinstance(decl, Variant):
        raise ArenaError(f"{path}: VARIANT is a {type(decl).__name__}, not arena.api.Variant")
    _check_fields(decl, path)
    return LoadedVariant(variant=decl, path=path, source=source, sha256=sha)


def _check_declaration_is_last(source: str, path: str) -> None:
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ArenaError(f"{path}: does not import: SyntaxError line {exc.lineno}: {exc.msg}") from None
    assigns = [
        node
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and any(isinstance(t, ast.Name) and t.id == "VARIANT" for t in _targets(node))
    ]
    if len(assigns) > 1:
        raise ArenaError(f"{path}: VARIANT is assigned {len(assigns)} times; a variant has one declaration")
    if assigns and tree.body[-1] is not assigns[0]:
        raise ArenaError(f"{path}: the VARIANT declaration must be the last statement of the file")


def _targets(node: ast.Assign | ast.AnnAssign) -> list[ast.expr]:
    return list(node.targets) if isinstance(node, ast.Assign) else [node.target]


def _check_fields(v: Variant, path: str) -> None:
    def bad(reason: str) -> ArenaError:
        return ArenaError(f"{path}: {reason}")

    if not isinstance(v.name, str) or not NAME_RE.match(v.name):
        raise bad(f"name {v.name!r} must be lowercase letters, digits and '_' (starting with a letter)")
    if v.kind not in KINDS:
        raise bad(f"kind {v.kind!r} is not one of {', '.join(KINDS)}{did_you_mean(str(v.kind), KINDS)}")
    if not isinstance(v.summary, str) or not v.summary.strip() or "\n" in v.summary:
        raise bad("summary must be one non-empty line")
    mixers = tuple(v.mixers)
    for m in mixers:
        if m not in MIXERS:
            raise bad(f"unknown mixer {m!r}{did_you_mean(str(m), MIXERS)}; mixers: {', '.join(MIXERS)}")
    if len(mixers) not in (1, 2) or len(set(mixers)) != len(mixers):
        raise bad(f"mixers {mixers} must be one mixer (baseline) or two different ones (hybrid)")
    if len(mixers) == 2 and v.fusion is None:
        raise bad("a hybrid (two mixers) needs a fusion module: fusion=YourFusion")
    if len(mixers) == 1 and v.fusion is not None:
        raise bad("a single-mixer baseline takes no fusion module")
    if v.fusion is not None and not (isinstance(v.fusion, type) and issubclass(v.fusion, Fusion)):
        raise bad("fusion must be a subclass of arena.api.Fusion")
    if v.match_params and v.kind != "baseline":
        raise bad("match_params is for baselines only")
    for hname, hp in v.hparams.items():
        if not isinstance(hname, str) or not hname.isidentifier():
            raise bad(f"hyperparameter name {hname!r} is not an identifier")
        problems = hp.problems(hname)
        if problems:
            raise bad(problems[0])
    if "mamba2" in mixers and "lr_mult" not in v.hparams:
        raise bad("variants with a Mamba-2 pathway must declare 'lr_mult' (use arena.api.lr_mult())")


def discover(folders: Iterable[str | Path]) -> list[LoadedVariant]:
    """Load every variant file in the folders (sorted by name). A duplicate name names both files."""
    found: dict[str, LoadedVariant] = {}
    for folder in folders:
        for path in sorted(Path(folder).glob("*.py")):
            if path.name.startswith("_"):
                continue
            lv = load_variant(path)
            if lv.name in found and found[lv.name].sha256 != lv.sha256:
                raise ArenaError(f"variant name '{lv.name}' is declared twice: {found[lv.name].path} and {path}")
            found.setdefault(lv.name, lv)
    return [found[k] for k in sorted(found)]


def builtin_variants() -> list[LoadedVariant]:
    return discover([builtin_dir()])


def builtin(name: str) -> LoadedVariant:
    variants = {lv.name: lv for lv in builtin_variants()}
    if name not in variants:
        raise ArenaError(f"unknown variant '{name}'{did_you_mean(name, variants)}; see: arena variants list")
    return variants[name]
