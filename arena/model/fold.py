"""Sequence operators under ``torch.func.vmap``: the pack dimension folded into the heads.

A packed run (``arena.model.pack``) trains K seeds of one variant as one model: its forward runs under
``vmap`` over stacked parameters, so every tensor carries a hidden leading K. Plain torch ops batch by
themselves, but the Triton kernels (FLA's ``chunk_rwkv6``, mamba-ssm's ``mamba_chunk_scan_combined``) cannot
run under ``vmap``. Their heads are independent, though, so K models of H heads are one call with K·H heads:
``r [B,T,H,K]`` of K models is ``[B,T,K·H,K]``, the bonus ``u [H,K]`` is ``[K·H,K]``, Mamba's ``A``, ``D`` and
``dt_bias`` ``[H]`` are ``[K·H]`` and its groups ``[B,T,G,N]`` are ``[B,T,K·G,N]`` (head k·H+h reads group
k·G + h·G/H, the group of head h in model k). Each head computes what it computes alone; only the launch is shared.

``fold_heads(fn, args, head_dims)`` calls ``fn`` on such folded arguments when any of them is batched, and
unfolds its outputs; outside ``vmap`` it is ``fn(*args)``. The fold runs at the level below ``vmap`` on the
physical tensors, so ordinary autograd records the kernel's own backward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch._C._functorch import is_batchedtensor

__all__ = ["fold_heads", "is_batched", "on_pack", "split_rows"]


def is_batched(*tensors: torch.Tensor | None) -> bool:
    """Whether any tensor is a vmap-batched one (the forward runs inside a packed model)."""
    return any(t is not None and is_batchedtensor(t) for t in tensors)


def _fold(t: torch.Tensor, head_dim: int | None) -> torch.Tensor:
    """Physical ``t`` (K, *logical) → the same tensor with the pack merged into ``head_dim`` (an index into the
    logical shape)."""
    if head_dim is None:
        raise ValueError("every tensor argument of fold_heads needs a head dimension")
    h = head_dim % (t.dim() - 1)
    t = t.movedim(0, h)  # (..., K, H, ...): the pack just before the heads
    return t.flatten(h, h + 1)  # (..., K·H, ...)


def _unfold(t: torch.Tensor, head_dim: int, k: int) -> torch.Tensor:
    """A folded output ``(..., K·H, ...)`` → ``(K, ..., H, ...)`` (pack dim 0)."""
    h = head_dim % t.dim()
    return t.unflatten(h, (k, t.shape[h] // k)).movedim(h, 0)


def fold_heads(fn: Callable[..., torch.Tensor], args: Sequence[Any], in_heads: Sequence[int | None],
               out_head: int) -> torch.Tensor:
    """``fn(*args)``; under ``vmap``, one call of ``fn`` with the pack folded into each argument's head dimension.

    ``in_heads[i]``: the head dimension of ``args[i]`` in its logical (per-model) shape, or None for a
    non-tensor argument; ``out_head``: the head dimension of the output, which keeps its logical shape.
    """
    if not is_batched(*(a for a in args if isinstance(a, torch.Tensor))):
        return fn(*args)

    def physical(*phys: Any) -> torch.Tensor:  # every tensor (K, *logical)
        k = next(a.shape[0] for a in phys if isinstance(a, torch.Tensor))
        folded = [a if not isinstance(a, torch.Tensor) else _fold(a, h) for a, h in zip(phys, in_heads, strict=True)]
        return _unfold(fn(*folded), out_head, k)

    return on_pack(physical, *args)


class _OnPack(torch.autograd.Function):
    """Only its ``vmap`` rule is used: every tensor argument with the pack moved to dim 0 (an unbatched one
    repeated), then ``fn`` on those physical tensors, whose output carries the pack at dim 0."""

    @staticmethod
    def forward(fn: Callable[..., torch.Tensor], *args: Any) -> Any:  # pragma: no cover - vmap only
        raise RuntimeError("on_pack runs under vmap only")

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> Any:  # pragma: no cover - vmap only
        raise RuntimeError("on_pack is differentiated through fn")

    @staticmethod
    def vmap(info: Any, in_dims: tuple[Any, ...], fn: Callable[..., torch.Tensor],
             *args: Any) -> tuple[torch.Tensor, int]:
        k = info.batch_size
        phys = [a if not isinstance(a, torch.Tensor) else
                (a.movedim(d, 0) if d is not None else a.expand(k, *a.shape)) for a, d in zip(args, in_dims[1:],
                                                                                              strict=True)]
        return fn(*phys), 0


def on_pack(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """Under vmap: ``fn`` called once on the physical tensors, every one with the pack at dim 0 — (K, *shape) — and
    returning (K, *out_shape). For operations whose batched form autograd would compute badly (see
    ``split_rows``). Outside vmap it is an error: call the plain operation there."""
    out: torch.Tensor = _OnPack.apply(fn, *args)
    return out


def split_rows(n_rows: int) -> int:
    """How many row chunks a long reduction is split into (each at least 128 rows): the weight gradient of a map
    applied to N = B·T rows is a GEMM with a tiny output and an N-long reduction, which cuBLAS runs on a handful of
    SMs, batched over a pack even worse (a [K, 128, 4096] × [K, 4096, 128] bmm took 141 µs on an H200; bench/results).
    Chunks give it parallelism; a small sum follows. The reduction order changes, not the math."""
    return next((c for c in (16, 8, 4, 2) if n_rows % c == 0 and n_rows // c >= 128), 1)
