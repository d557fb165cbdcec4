"""Check a loaded variant against a spec: the fusion's shape, finite outputs, the parameter budget, causality.

The same check serves ``arena submit``, tournaments, the search and ``arena variants check``; each problem is one
ArenaError line naming the file.
"""

from __future__ import annotations

import functools

import torch

from arena.core.errors import ArenaError
from arena.core.hparams import UndeclaredHParam, resolve
from arena.core.spec import ModelDims, Spec
from arena.core.variant import LoadedVariant
from arena.model.lm import build_model, count_params
from arena.runner.loader import builtin

CAUSAL_T = 24  # sequence length of the causality probe (not a multiple of any chunk size we use)


@functools.cache
def reference_params(dims: ModelDims, reference: str = "gf") -> int:
    """Parameter count of the reference variant at these dims: the target baselines are matched to."""
    ref = builtin(reference)
    return count_params(build_model(dims, ref.variant))


def param_count(loaded: LoadedVariant, spec: Spec) -> int:
    target = reference_params(spec.dims, spec.reference_variant) if loaded.variant.match_params else None
    return count_params(build_model(spec.dims, loaded.variant, match_params_to=target))


def check_variant(loaded: LoadedVariant, spec: Spec) -> int:
    """Validate a loaded variant against a spec: fusion shape, finite outputs, budget, causality.

    Returns the parameter count at the spec size. Raises ArenaError naming the file otherwise.
    """
    v, path = loaded.variant, loaded.path
    d = spec.dims.d_model
    gen = torch.Generator().manual_seed(0)
    hp = resolve(v.hparams, None, v.name)
    if v.fusion is not None:
        try:
            fusion = v.fusion(d, hp)
            a, b, x = (torch.randn(2, CAUSAL_T, d, generator=gen) for _ in range(3))  # (2, T, D) each
            y = fusion(a, b, x)
        except UndeclaredHParam as exc:
            raise ArenaError(f"{path}: {exc}") from None
        except Exception as exc:
            raise ArenaError(f"{path}: the fusion module fails on a (2, {CAUSAL_T}, {d}) batch: {exc}") from None
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (2, CAUSAL_T, d):
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ArenaError(
                f"{path}: the fusion returns shape {shape}; it must return (B, T, D) = (2, {CAUSAL_T}, {d})"
            )
    target = reference_params(spec.dims, spec.reference_variant) if v.match_params else None
    try:
        model = build_model(spec.dims, v, hp, seed=0, backend="torch_chunk", match_params_to=target)
    except UndeclaredHParam as exc:
        raise ArenaError(f"{path}: {exc}") from None
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
