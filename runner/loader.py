"""Load variant files by path: read, import from the exact source text, and check the declaration's fields.

``arena.runner.check`` then checks the loaded variant against a spec (build, shapes, budget, causality). Every
problem is one ArenaError line that names the file and the reason; nothing is stored for a rejected file.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.resources
import inspect
import re
import sys
import types
from collections.abc import Iterable, Mapping
from pathlib import Path

from arena.core.config import did_you_mean
from arena.core.errors import ArenaError
from arena.core.hparams import HParam
from arena.core.variant import KINDS, MIXERS, Fusion, LoadedVariant, Variant
from arena.runner.guard import variant_code
from arena.runner.policy import audit_source

HYBRID = ("rwkv6", "mamba2")  # the one pair a fusion fuses (in either order: the model passes them by name)
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # full-matched, ASCII only
MARKUP_RE = re.compile(r"\[/?[A-Za-z#@][^\]]*\]|\[/\]")  # rich's [bold red]…[/] tags
# Ranges a hyperparameter of a known name must stay inside (its meaning): an initial share, a positive multiplier.
MEANING: dict[str, tuple[float, float, bool, bool]] = {  # low bound, high bound, each open?
    "gate_init": (0.0, 1.0, True, True),
    "lr_mult": (0.0, float("inf"), True, True),
    "lr_scale": (0.0, float("inf"), True, True),
}


def builtin_dir() -> Path:
    """The folder of the shipped variants (variants/ in the repo, ``arena/variants`` when installed)."""
    return Path(str(importlib.resources.files("arena.variants")))


def read_file(path: str | Path) -> str:
    """A variant file's text; one line naming the file when it cannot be read."""
    p = Path(path)
    if p.is_dir():
        raise ArenaError(f"{p}: is a folder; give the path to a variant .py file")
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArenaError(f"{p}: no such file; give the path to a variant .py file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArenaError(f"{p}: cannot read it ({exc})") from None


def load_variant(path: str | Path) -> LoadedVariant:
    """Read and import a variant file (in this process: a worker's, or a test's); ArenaError naming the file."""
    return load_source(read_file(path), str(path))


def load_source(source: str, path: str, *, policy: bool = True) -> LoadedVariant:
    """Import a variant from its source text (a worker reloads the exact text the parent hashed).

    The static policy (``runner.policy``) reads the source first; only then does it run, under the audit hook of
    ``runner.guard`` (no I/O, no processes). ``policy=False`` skips the static reading: for tests of the run-time
    guards only. Call this in a worker process, never where the store is written (``runner.inspect``)."""
    sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if policy:
        audit_source(source, path)
    _check_declaration_is_last(source, path)
    module = types.ModuleType(f"arena_variant_{sha[:16]}")
    module.__file__ = path
    try:
        code = compile(source, path, "exec")
        # Registered while executing so that dataclasses/typing inside the file can resolve the module.
        sys.modules[module.__name__] = module
        with variant_code():
            exec(code, module.__dict__)
    except Exception as exc:
        raise ArenaError(f"{path}: does not import: {type(exc).__name__}: {_one_line(exc)}") from None
    except BaseException as exc:  # SystemExit, KeyboardInterrupt raised by the file: a refusal, not an exit
        raise ArenaError(f"{path}: raised {type(exc).__name__} while importing") from None
    finally:
        sys.modules.pop(module.__name__, None)
    decl = module.__dict__.get("VARIANT")
    if decl is None:
        raise ArenaError(f"{path}: no declaration; end the file with VARIANT = Variant(name=..., kind=..., ...)")
    if not isinstance(decl, Variant):
        raise ArenaError(f"{path}: VARIANT is a {type(decl).__name__}, not arena.api.Variant")
    _check_fields(decl, path)
    _check_reserved(decl.name, source, path)
    return LoadedVariant(variant=decl, path=path, source=source, sha256=sha)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def shipped_sources() -> dict[str, str]:
    """The shipped variants' names (their file stems) and exact sources (read once per process: every load asks)."""
    return dict(_shipped())


@functools.cache
def _shipped() -> tuple[tuple[str, str], ...]:
    return tuple((p.stem, p.read_text(encoding="utf-8")) for p in sorted(builtin_dir().glob("*.py"))
                 if not p.name.startswith("_"))


def is_shipped(source: str) -> bool:
    """Whether ``source`` is exactly one of the installed, shipped variant files (arena's own reviewed code)."""
    return source in shipped_sources().values()


def _check_reserved(name: str, source: str, path: str) -> None:
    shipped = shipped_sources()
    if name in shipped and shipped[name] != source:
        raise ArenaError(f"{path}: the name '{name}' is reserved for arena's shipped variant; give yours another name")


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

    if not isinstance(v.name, str) or not v.name.isascii() or not NAME_RE.fullmatch(v.name):
        raise bad(f"name {v.name!r} must be lowercase ASCII letters, digits and '_' (starting with a letter, ≤ 64)")
    if v.kind not in KINDS:
        raise bad(f"kind {v.kind!r} is not one of {', '.join(KINDS)}{did_you_mean(str(v.kind), KINDS)}")
    if not isinstance(v.summary, str) or not v.summary.strip() or not v.summary.isprintable() or len(v.summary) > 200:
        raise bad("summary must be one non-empty line of printable text (no control characters), ≤ 200 characters")
    if MARKUP_RE.search(v.summary):
        raise bad("summary must be plain text: it looks like console markup ([style]…[/])")
    mixers = tuple(v.mixers)
    for m in mixers:
        if m not in MIXERS:
            raise bad(f"unknown mixer {m!r}{did_you_mean(str(m), MIXERS)}; mixers: {', '.join(MIXERS)}")
    if len(mixers) not in (1, 2) or len(set(mixers)) != len(mixers):
        raise bad(f"mixers {mixers} must be one mixer (baseline) or two different ones (hybrid)")
    if len(mixers) == 2 and set(mixers) != set(HYBRID):
        raise bad(f"mixers {mixers}: a hybrid runs exactly {' and '.join(HYBRID)} (its fusion reads rwkv and mamba)")
    if len(mixers) == 2 and v.fusion is None:
        raise bad("a hybrid (two mixers) needs a fusion module: fusion=YourFusion")
    if len(mixers) == 1 and v.fusion is not None:
        raise bad("a single-mixer baseline takes no fusion module")
    if v.fusion is not None and not (isinstance(v.fusion, type) and issubclass(v.fusion, Fusion)):
        raise bad("fusion must be a subclass of arena.api.Fusion")
    if v.fusion is not None and not _takes_pathways_by_name(v.fusion):
        raise bad("the fusion's forward is called by name: it must be def forward(self, rwkv, mamba, x)")
    if not isinstance(v.match_params, bool):
        raise bad("match_params must be True (matched to the reference's count, the default) or False (unmatched)")
    if not isinstance(v.hparams, Mapping):
        raise bad("hparams must be a dict of name → HParam (gate_init(), lr_mult(), HParam(low, high, default))")
    for hname, hp in v.hparams.items():
        if not isinstance(hname, str) or not hname.isidentifier() or not hname.isascii():
            raise bad(f"hyperparameter name {hname!r} is not an identifier")
        if not isinstance(hp, HParam):
            raise bad(f"hyperparameter '{hname}' is a {type(hp).__name__}, not an HParam (use gate_init(), "
                      "lr_mult() or HParam(low, high, default))")
        problems = hp.problems(hname) + _meaning(hname, hp)
        if problems:
            raise bad(problems[0])
    if "mamba2" in mixers and "lr_mult" not in v.hparams:
        raise bad("variants with a Mamba-2 pathway must declare 'lr_mult' (use arena.api.lr_mult())")


def _takes_pathways_by_name(fusion: type[Fusion]) -> bool:
    """Whether ``forward`` accepts ``rwkv=, mamba=, x=``: the model passes the pathways by name, so a file that lists
    its mixers in the other order cannot swap them, and a forward with other names fails here, not mid-run."""
    try:
        with variant_code():
            inspect.signature(fusion.forward).bind(None, rwkv=None, mamba=None, x=None)
    except (TypeError, ValueError):
        return False
    return True


def _meaning(name: str, hp: HParam) -> list[str]:
    """A known hyperparameter's range must lie inside what the name means (gate_init a share in (0, 1), ...)."""
    if name not in MEANING:
        return []
    lo, hi, open_lo, open_hi = MEANING[name]
    inside_lo = hp.low > lo if open_lo else hp.low >= lo
    inside_hi = hp.high < hi if open_hi else hp.high <= hi
    if inside_lo and inside_hi:
        return []
    bounds = f"{'(' if open_lo else '['}{lo:g}, {hi:g}{')' if open_hi else ']'}"
    return [f"hyperparameter '{name}' range [{hp.low}, {hp.high}] leaves {bounds}, the values it can mean"]


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
