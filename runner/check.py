"""Check a loaded variant against a spec before it competes: the fusion's shape, finite outputs, every trained value
inside the budget, and causality on the spec's real batch shape in both modes, with autograd on, at initial weights
and after one real training step. The run itself checks again while it trains (``runner.train``) and a clean
process checks the trained weights (``runner.verify``). Each problem is one ArenaError line naming the file.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from arena.core.errors import ArenaError
from arena.core.hparams import VALUE_PARAMS, HParams, UndeclaredHParam, resolve
from arena.core.spec import ModelDims, Spec
from arena.core.variant import Fusion, LoadedVariant, Variant
from arena.model.lm import MATCH_TOLERANCE, HybridLM, build_model, count_params, match_deviation
from arena.runner import causality
from arena.runner.loader import builtin
from arena.runner.optim import make_optimizer
from arena.runner.tracks import Track

CHECK_SEED = 987_654_321  # the init the check builds (the runs use the tournament seeds)


@functools.cache
@functools.lru_cache(maxsize=8)
def reference_params(dims: ModelDims, reference: str = "gf") -> int:
    """Parameter count of the reference variant at these dims (standard FFN width): what every entry is matched to.
    Cached: a pure function of its arguments (a shipped file), asked by every run, check and verification."""
    ref = builtin(reference)
    assert isinstance(ref.variant, Variant)
    return count_params(build_model(dims, ref.variant))


def unmatched_reason(v: Variant, n_params: int, target: int) -> str | None:
    """Why a matched variant's count is off the reference's by more than ``MATCH_TOLERANCE`` (None when it is not,
    or when the file declares itself unmatched)."""
    deviation = match_deviation(n_params, target)
    if not v.match_params or abs(deviation) <= MATCH_TOLERANCE:
        return None
    return (f"cannot be matched to the reference's {target:,} parameters within ±{MATCH_TOLERANCE:.1%} through the "
            f"FFN width (closest: {n_params:,}, {deviation:+.2%}); make the fusion smaller, or declare "
            "match_params=False (an unmatched entry: marked in every table, never crowned over a matched one)")


class Violation(ArenaError):
    """The variant broke a rule about its state (new parameters, buffers, tensors outside its parameters)."""


def built_members(spec: Spec, loaded: LoadedVariant, seeds: list[int], hps: list[HParams], backend: str,
                  dev: torch.device) -> tuple[list[HybridLM], int, int, str | None]:
    """Every member's plain model on ``dev`` and the spec's size rules: (models, count, the reference's count, why
    the size is refused or None).

    The FFN width is matched once, for the first member: hyperparameters change values only (the entry check holds
    every file to it), so every member's match is the same width; a shape difference is still caught here."""
    v = loaded.variant
    assert isinstance(v, Variant), "the run builds the variant: call it in a worker, on a loaded file"
    target = reference_params(spec.dims, spec.reference_variant)
    first = build_model(spec.dims, v, hps[0], seed=seeds[0], backend=backend, match_params_to=target)
    members = [first.to(dev)] + [
        HybridLM(spec.dims, v, hp, seed=seed, backend=backend, ffn_hidden=first.ffn_hidden).to(dev)
        for seed, hp in zip(seeds[1:], hps[1:], strict=True)]
    shapes = {n: p.shape for n, p in first.named_parameters()}
    if any({n: p.shape for n, p in m.named_parameters()} != shapes for m in members[1:]):
        raise ValueError("the members of a pack differ in shape: their hyperparameters change the model")
    n_params = count_params(first)
    refusal = (f"{n_params:,} parameters exceed the spec's budget of {spec.param_budget:,}"
               if n_params > spec.param_budget else unmatched_reason(v, n_params, target))
    return members, n_params, target, refusal


# -- every trained value ---------------------------------------------------------------------------------------------
def _tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 4 and isinstance(value, list | tuple | set | frozenset):
        for v in value:
            yield from _tensors(v, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v, depth + 1)


def audit_model(model: HybridLM, expected: set[int], where: str) -> None:
    """Every value a variant could train must be a parameter the model had when it was built (``expected``: their
    ids): no parameter added later, no buffer and no tensor kept outside the parameters by variant code (a plain
    list of tensors is state the budget and the optimizer would not see). ``last_share`` is the one exception."""
    params = {id(p) for p in model.parameters()}
    if params != expected:
        raise Violation(f"the model's parameters changed {where}: {len(params - expected)} added, "
                         f"{len(expected - params)} removed (every parameter must exist when the model is built)")
    for name, module in model.named_modules():
        if not isinstance(module, Fusion):
            continue
        for sub_name, sub in module.named_modules():
            if any(True for _ in sub.buffers(recurse=False)):
                raise Violation(f"the fusion ({name}.{sub_name or 'self'}) holds buffers {where}: state outside "
                                 "its parameters")
            for attr, value in vars(sub).items():
                if attr in ("last_share", "_parameters", "_buffers", "_modules"):
                    continue
                if any(id(tensor) not in params for tensor in _tensors(value)):
                    raise Violation(f"the fusion keeps tensors in '{attr}' {where}: state outside its parameters "
                                     "(hold trained values as nn.Parameter attributes)")


# -- the check ------------------------------------------------------------------------------------------------------
# Rows of the entry check's batches. Causality is a property of each row (and of rows mixed together, which more
# than one row shows); a file that behaves otherwise at the full batch is caught where the full batch runs: the
# gradient check on real training steps and the clean-process check of the final weights (``runner.verify``).
# Eight rows instead of 64 make the check of one file seconds instead of half a minute on a CPU.
CHECK_ROWS = 8


def check_batches(spec: Spec, track: Track | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two real training batches (CHECK_ROWS, T) of the spec (from an unpredictable step) and their targets, or
    random tokens of the spec's vocabulary when no data is at hand."""
    rows = min(CHECK_ROWS, spec.batch_size)
    if track is not None:
        step_a, step_b = causality.random_t0(10_000), causality.random_t0(10_000)
        x, y = track.train_batch(CHECK_SEED, step_a)
        other, _ = track.train_batch(CHECK_SEED, step_b + 10_000)
        return x[:rows], y[:rows], other[:rows]
    gen = torch.Generator().manual_seed(causality.random_t0(2**30))
    shape = (rows, spec.seq_len)
    x = torch.randint(0, spec.dims.vocab_size, shape, generator=gen)
    return x, torch.randint(0, spec.dims.vocab_size, shape, generator=gen), torch.randint(
        0, spec.dims.vocab_size, shape, generator=gen)


def check_variant(loaded: LoadedVariant, spec: Spec, track: Track | None = None) -> int:
    """Validate a loaded variant against a spec; returns the parameter count at the spec size.

    Raises ArenaError naming the file: fusion shape, build, budget, finite outputs, causality (gradient and paired
    rows, train and eval mode) at initial weights and after one AdamW step on a real batch, every trained value a
    parameter that existed at build.
    """
    v, path = loaded.variant, loaded.path
    assert isinstance(v, Variant), "check_variant runs the variant: call it in a worker (arena.runner.inspect)"
    hp = resolve(v.hparams, None, v.name)
    x, y, other = check_batches(spec, track)
    _check_fusion_shape(v, hp, spec, path)
    target = reference_params(spec.dims, spec.reference_variant)
    try:
        model = build_model(spec.dims, v, hp, seed=CHECK_SEED, backend="torch_chunk", match_params_to=target)
    except UndeclaredHParam as exc:
        raise ArenaError(f"{path}: {exc}") from None
    except Exception as exc:
        raise ArenaError(f"{path}: the model does not build at the spec size: {type(exc).__name__}: {exc}") from None
    n_params = count_params(model)
    if n_params > spec.param_budget:
        raise ArenaError(
            f"{path}: {n_params:,} parameters exceed the spec's budget of {spec.param_budget:,} (spec {spec.label})"
        )
    mismatch = unmatched_reason(v, n_params, target)
    if mismatch:
        raise ArenaError(f"{path}: {mismatch} (spec {spec.label})")
    _check_value_params(v, model, spec, path)
    expected = {id(p) for p in model.parameters()}
    try:
        audit_model(model, expected, "after it was built")
        _causal(model, x, other, path, "at initial weights")
        _one_step(model, spec, hp.to_dict(), x, y)
        audit_model(model, expected, "after a training step")
        _causal(model, x, other, path, "after a training step")
    except ArenaError as exc:
        message = str(exc)
        raise ArenaError(message if message.startswith(path) else f"{path}: {message}") from None
    except Exception as exc:
        raise ArenaError(f"{path}: forward fails on a {tuple(x.shape)} batch: {type(exc).__name__}: {exc}") from None
    return n_params


def _check_value_params(v: Variant, model: HybridLM, spec: Spec, path: str) -> None:
    """gate_init, lr_mult and lr_scale change values only: at either end of each declared range the model has the
    same parameters, of the same shapes (a search trains trials that differ in them as one pack)."""
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    for name in (n for n in VALUE_PARAMS if n in v.hparams):
        h = v.hparams[name]
        for value in (h.low, h.high):
            try:
                # At the model's matched FFN width: a value that changed the count would change some shape anyway,
                # and matching again costs two more builds per value (a third of a file's check).
                other = HybridLM(spec.dims, v, resolve(v.hparams, {name: value}, v.name), seed=CHECK_SEED,
                                 backend="torch_chunk", ffn_hidden=model.ffn_hidden)
            except Exception as exc:
                raise ArenaError(f"{path}: the model does not build with {name}={value} (the end of its declared "
                                 f"range): {type(exc).__name__}: {exc}") from None
            if {n: tuple(p.shape) for n, p in other.named_parameters()} != shapes:
                raise ArenaError(f"{path}: {name}={value} changes the model's parameters or their shapes; {name} "
                                 "may set values only (a search trains its trials as one model): declare a shape "
                                 "choice as a hyperparameter of its own")


def _check_fusion_shape(v: Variant, hp: Any, spec: Spec, path: str) -> None:
    if v.fusion is None:
        return
    d, t = spec.dims.d_model, spec.seq_len
    gen = torch.Generator().manual_seed(0)
    try:
        fusion = v.fusion(d, hp)
        a, b, h = (torch.randn(2, t, d, generator=gen) for _ in range(3))  # (2, T, D) each
        out = fusion(rwkv=a, mamba=b, x=h)  # by name, as the model calls it
    except UndeclaredHParam as exc:
        raise ArenaError(f"{path}: {exc}") from None
    except Exception as exc:
        raise ArenaError(f"{path}: the fusion module fails on a (2, {t}, {d}) batch: {exc}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, t, d):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArenaError(f"{path}: the fusion returns shape {shape}; it must return (B, T, D) = (2, {t}, {d})")


def _causal(model: HybridLM, x: torch.Tensor, other: torch.Tensor, path: str, when: str) -> None:
    """Gradient and paired-row checks in training mode and in evaluation mode, each with autograd on (and the
    paired rows also without it, as evaluation runs)."""
    for training in (True, False):
        model.train(training)
        mode = "training" if training else "evaluation"
        t0 = causality.random_t0(x.shape[1])
        embeddings, logits = model.embed_forward(x)  # (B, T, D), (B, T, V)
        if tuple(logits.shape) != (*x.shape, model.dims.vocab_size):
            raise ArenaError(f"{path}: logits have shape {tuple(logits.shape)}, expected {(*x.shape, 'vocab')}")
        if not bool(torch.isfinite(logits).all()):
            raise ArenaError(f"{path}: outputs are not finite (NaN or inf) {when} in {mode} mode")
        leak = causality.gradient_leak(embeddings, logits, t0)
        if leak.leaks:
            raise ArenaError(f"{path}: {leak.describe()} ({mode} mode, {when})")
        for grad_on in (True, False):
            with torch.set_grad_enabled(grad_on):
                pair = causality.perturbation_leak(model, x, other, causality.random_t0(x.shape[1]))
            if pair.leaks:
                raise ArenaError(f"{path}: {pair.describe()} ({mode} mode, {when})")
    model.train()


def _one_step(model: nn.Module, spec: Spec, hp: dict[str, float], x: torch.Tensor, y: torch.Tensor) -> None:
    """One real AdamW step on a real batch (a variant that changes itself at its first step shows it here)."""
    from arena.runner.evaluate import loss_of

    assert isinstance(model, HybridLM)
    model.train()
    opt = make_optimizer(model, spec, hp.get("lr_mult", 1.0), capturable=False, lr_scale=hp.get("lr_scale", 1.0))
    loss_of(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
