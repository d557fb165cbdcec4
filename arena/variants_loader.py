"""Load variant files by path and validate them against the plugin contract.

The same validation serves ``arena submit``, tournaments and ``arena variants check``. Every problem is one
ArenaError line that names the file and the reason; nothing is stored for a rejected file.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.resources
import re
import sys
import types
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from arena.api import KINDS, MIXERS, Fusion, Variant
from arena.config import did_you_mean
from arena.errors import ArenaError
from arena.runner.spec import ModelDims, Spec

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
CAUSAL_T = 24  # sequence length of the causality probe (not a multiple of any chunk size we use)


@dataclass(frozen=True)
class LoadedVariant:
    """A variant file as loaded: its declaration, where it came from, and the exact source it ran."""

    variant: Variant
    path: str
    source: str
    sha256: str

    @property
    def name(self) -> str:
        return self.variant.name


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


@functools.cache
def reference_params(dims: ModelDims, reference: str = "gf") -> int:
    """Parameter count of the reference variant at these dims: the target baselines are matched to."""
    from arena.model.lm import build_model, count_params

    ref = builtin(reference)
    return count_params(build_model(dims, ref.variant))


def param_count(loaded: LoadedVariant, spec: Spec) -> int:
    from arena.model.lm import build_model, count_params

    target = reference_params(spec.dims, spec.reference_variant) if loaded.variant.match_params else None
    return count_params(build_model(spec.dims, loaded.variant, match_params_to=target))


def check_variant(loaded: LoadedVariant, spec: Spec) -> int:
    """Validate a loaded variant against a spec: fusion shape, finite outputs, budget, causality.

    Returns the parameter count at the spec size. Raises ArenaError naming the file otherwise.
    """
    from arena.model.lm import build_model, count_params

    v, path = loaded.variant, loaded.path
    d = spec.dims.d_model
    gen = torch.Generator().manual_seed(0)
    if v.fusion is not None:
        try:
            fusion = v.fusion(d, v.defaults())
            a, b, x = (torch.randn(2, CAUSAL_T, d, generator=gen) for _ in range(3))  # (2, T, D) each
            y = fusion(a, b, x)
        except Exception as exc:
            raise ArenaError(f"{path}: the fusion module fails on a (2, {CAUSAL_T}, {d}) batch: {exc}") from None
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, CAUSAL_T, d):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ArenaError(
                f"{path}: the fusion returns shape {shape}; it must return (B, T, D) = (2, {CAUSAL_T}, {d})"
            )
    target = reference_params(spec.dims, spec.reference_variant) if v.match_params else None
    try:
        model = build_model(spec.dims, v, seed=0, backend="torch_chunk", match_params_to=target)
    except Exception as exc:
        raise ArenaError(f"{path}: the model does not build at the spec size: {type(exc).__name__}: {exc}") from None
    n_params = count_params(model)
    if n_params > spec.param_budget:
        raise ArenaError(
            f"{path}: {n_params:,} parameters exceed the spec's budget of {spec.param_budget:,} (spec {spec.label})"
        )
    model.eval()
    t_probe = CAUSAL_T // 2
    idx = torch.randint(0, spec.dims.vocab_size, (2, CAUSAL_T), generator=gen)  # (2, T)
    changed = idx.clone()
    changed[:, t_probe + 1 :] = torch.randint(0, spec.dims.vocab_size, (2, CAUSAL_T - t_probe - 1), generator=gen)
    with torch.no_grad():
        try:
            out = model(idx)  # (2, T, V)
            out2 = model(changed)
        except Exception as exc:
            raise ArenaError(f"{path}: forward fails on a tiny batch: {type(exc).__name__}: {exc}") from None
    if tuple(out.shape) != (2, CAUSAL_T, spec.dims.vocab_size):
        raise ArenaError(f"{path}: logits have shape {tuple(out.shape)}, expected (2, {CAUSAL_T}, vocab)")
    if not torch.isfinite(out).all():
        raise ArenaError(f"{path}: outputs on a tiny batch are not finite (NaN or inf)")
    leak = (out[:, : t_probe + 1] - out2[:, : t_probe + 1]).abs().max().item()
    if leak > 1e-5:
        raise ArenaError(
            f"{path}: not causal: logits at positions ≤ {t_probe} change by {leak:.2e} when later tokens change"
        )
    return n_params
