"""Mamba-2 SSD (state-space duality) operator: a per-step oracle, a chunked pure-torch form, and the dispatch.

Layout is mamba_ssm's: ``x [b,l,h,p]``, ``dt [b,l,h]``, ``A [h]`` (negative), ``B, C [b,l,g,n]``, ``D [h]``, state
``[b,h,p,n]``. The recurrence, per head h, is

    S_t = exp(dt_t·A_h) S_{t-1} + dt_t x_t B_tᵀ        y_t = S_t C_t + D_h x_t

Head h reads group ``h // (H/G)`` (repeat_interleave), as mamba_ssm's Triton kernels do
(``pid_h // nheads_ngroups_ratio``); tiling the groups instead (head h → group h % G) is the bug FLA's and old
transformers' torch paths had.

The references compute in fp32 (fp64 when any input is fp64), return ``y`` in ``x``'s dtype and the final state in the
compute dtype. Nothing here imports mamba_ssm at import time: the kernel is fetched lazily through ``backend``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from arena.model import backend as _backend
from arena.model.fold import fold_heads

__all__ = ["ssd", "ssd_backend", "ssd_chunk_ref", "ssd_recurrent_ref"]


def _compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Groups → heads: [b,l,g,n] → [b,l,h,n], head h taking group h // (H/G)."""
    n_groups = t.shape[2]
    if n_heads % n_groups:
        raise ValueError(f"n_heads={n_heads} is not a multiple of n_groups={n_groups}")
    return t.repeat_interleave(n_heads // n_groups, dim=2)


def ssd_recurrent_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The SSD recurrence one step at a time (the test oracle). ``dt`` is already softplus-ed and clamped.

    Returns ``(y [b,l,h,p] in x.dtype, hT [b,h,p,n] in the compute dtype)``.
    """
    # Autocast off: under bf16 autocast the einsums would otherwise run in bf16, and the reference must not.
    with torch.autocast(x.device.type, enabled=False):
        return _recurrent(x, dt, A, B, C, D, h0)


def _recurrent(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    cd = _compute_dtype(x, dt, A, B, C, D, h0)
    b, seq, h, p = x.shape
    n = B.shape[-1]
    xf, dtf, Af = x.to(cd), dt.to(cd), A.to(cd)
    Bh, Ch = _heads(B.to(cd), h), _heads(C.to(cd), h)  # (b, l, h, n)
    state = h0.to(cd) if h0 is not None else x.new_zeros(b, h, p, n, dtype=cd)  # (b, h, p, n)
    ys = []
    for t in range(seq):
        decay = torch.exp(dtf[:, t] * Af)  # (b, h)
        inp = (dtf[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]  # (b, h, p, n)
        state = decay[..., None, None] * state + inp
        ys.append(torch.einsum("bhpn,bhn->bhp", state, Ch[:, t]))  # (b, h, p)
    y = torch.stack(ys, dim=1) if ys else xf.new_zeros(b, 0, h, p)  # (b, l, h, p)
    if D is not None:
        y = y + D.to(cd)[:, None] * xf
    return y.to(x.dtype), state


def _segsum(a: torch.Tensor) -> torch.Tensor:
    """seg[..., i, j] = a[..., j+1] + ... + a[..., i] for i ≥ j, -inf above the diagonal.

    Summing the masked terms directly (rather than differencing a cumsum) keeps every entry exact to rounding even
    when the cumulative log-decay within a chunk is in the thousands; exp of the result is then the decay matrix.
    """
    q = a.shape[-1]
    below = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device), diagonal=-1)
    terms = a[..., :, None].expand(*a.shape, q).masked_fill(~below, 0.0)  # (..., q, q): [k, j] = a_k for k > j
    seg = torch.cumsum(terms, dim=-2)  # (..., q, q)
    on_or_below = torch.tril(torch.ones(q, q, dtype=torch.bool, device=a.device))
    return seg.masked_fill(~on_or_below, -math.inf)


def ssd_chunk_ref(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    h0: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked SSD in pure torch (quadratic within a chunk, a recurrence across chunks); autograd-friendly.

    Same contract as ``ssd_recurrent_ref``. Any T works: the tail is padded with dt = 0, which leaves the state
    unchanged (decay exp(0) = 1, input dt·x·Bᵀ = 0), so the final state is exact too.
    """
    with torch.autocast(x.device.type, enabled=False):  # fp32 at least, also inside a bf16 autocast region
        return _chunked(x, dt, A, B, C, D, h0, chunk_size)


def _chunked(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    h0: torch.Tensor | None,
    chunk_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    cd = _compute_dtype(x, dt, A, B, C, D, h0)
    b, seq, h, p = x.shape
    n = B.shape[-1]
    q = chunk_size
    pad = (-seq) % q
    nc = (seq + pad) // q
    xf = F.pad(x.to(cd), (0, 0, 0, 0, 0, pad))  # (b, L, h, p), L = nc·q
    dtf = F.pad(dt.to(cd), (0, 0, 0, pad))  # (b, L, h)
    Bh = F.pad(_heads(B.to(cd), h), (0, 0, 0, 0, 0, pad))  # (b, L, h, n)
    Ch = F.pad(_heads(C.to(cd), h), (0, 0, 0, 0, 0, pad))  # (b, L, h, n)

    xdt = (xf * dtf[..., None]).view(b, nc, q, h, p)  # (b, c, q, h, p): the input is dt·x
    Bc, Cc = Bh.view(b, nc, q, h, n), Ch.view(b, nc, q, h, n)  # (b, c, q, h, n)
    a = (dtf * A.to(cd)).view(b, nc, q, h).permute(0, 3, 1, 2)  # (b, h, c, q): log-decay per step, ≤ 0
    a_cum = torch.cumsum(a, dim=-1)  # (b, h, c, q)

    # Within a chunk: y_i = Σ_{j≤i} (C_i·B_j) exp(a_{j+1..i}) dt_j x_j.
    decay = torch.exp(_segsum(a))  # (b, h, c, q, q)
    scores = torch.einsum("bcihn,bcjhn->bhcij", Cc, Bc) * decay  # (b, h, c, q, q)
    y = torch.einsum("bhcij,bcjhp->bcihp", scores, xdt)  # (b, c, q, h, p)

    # Each chunk's own contribution to the state at its end: Σ_j exp(a_{j+1..Q}) dt_j x_j B_jᵀ.
    to_end = torch.exp(a_cum[..., -1:] - a_cum)  # (b, h, c, q); exponent ≤ 0
    chunk_states = torch.einsum("bcjhn,bhcj,bcjhp->bchpn", Bc, to_end, xdt)  # (b, c, h, p, n)

    # Across chunks: a short sequential scan (nc steps) keeps every exponent ≤ 0 and the graph simple.
    chunk_decay = torch.exp(a_cum[..., -1]).permute(0, 2, 1)  # (b, c, h)
    state = h0.to(cd) if h0 is not None else xf.new_zeros(b, h, p, n)  # (b, h, p, n)
    starts = []
    for c in range(nc):
        starts.append(state)
        state = chunk_decay[:, c, :, None, None] * state + chunk_states[:, c]
    start_states = torch.stack(starts, dim=1)  # (b, c, h, p, n): the state entering each chunk

    # The carried-in state, decayed to each position and read by C.
    from_start = torch.exp(a_cum)  # (b, h, c, q)
    y = y + torch.einsum("bcihn,bchpn,bhci->bcihp", Cc, start_states, from_start)  # (b, c, q, h, p)

    y = y.reshape(b, nc * q, h, p)[:, :seq]  # (b, l, h, p)
    if D is not None:
        y = y + D.to(cd)[:, None] * xf[:, :seq]
    return y.to(x.dtype), state


def _discretize_dt(dt_raw: torch.Tensor, dt_bias: torch.Tensor, dt_limit: tuple[float, float]) -> torch.Tensor:
    """softplus(dt_raw + dt_bias) clamped to dt_limit, in fp32 (fp64 for fp64 input), as the kernel does."""
    cd = _compute_dtype(dt_raw, dt_bias)
    dt = F.softplus(dt_raw.to(cd) + dt_bias.to(cd))  # (b, l, h)
    lo, hi = dt_limit
    if lo > 0.0 or hi < math.inf:
        dt = dt.clamp(min=lo, max=hi)
    return dt


def ssd_backend(backend: str, x: torch.Tensor) -> str:
    """The SSD backend this call would use ('kernel', 'torch_chunk' or 'torch_recurrent').

    The kernel is only looked up for CUDA tensors, so CPU code never imports mamba_ssm.
    """
    kernel = _backend.mamba_chunk_scan_combined() if x.is_cuda else "not looked up for CPU tensors"
    return _backend.resolve(backend, x, kernel)


def ssd(
    x: torch.Tensor,
    dt_raw: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None,
    dt_bias: torch.Tensor,
    *,
    chunk_size: int,
    dt_limit: tuple[float, float] = (0.0, math.inf),
    backend: str = "auto",
) -> tuple[torch.Tensor, str]:
    """SSD with mamba_ssm's ``mamba_chunk_scan_combined`` conventions: ``dt_raw`` is pre-softplus, without bias.

    Returns ``(y [b,l,h,p] in x.dtype, backend used)``.
    """
    used = ssd_backend(backend, x)

    def call(x: torch.Tensor, dt_raw: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
             D: torch.Tensor | None, dt_bias: torch.Tensor) -> torch.Tensor:
        if used == "kernel":
            kernel = _backend.mamba_chunk_scan_combined()
            return kernel(x, dt_raw, A, B, C, chunk_size, D=D, dt_bias=dt_bias, dt_softplus=True,
                          dt_limit=dt_limit)  # (b, l, h, p)
        dt = _discretize_dt(dt_raw, dt_bias, dt_limit)  # (b, l, h)
        if used == "torch_recurrent":
            return ssd_recurrent_ref(x, dt, A, B, C, D)[0]
        return ssd_chunk_ref(x, dt, A, B, C, D, chunk_size=chunk_size)[0]

    # In a packed model (under vmap) the K models' heads and groups run as one call (arena.model.fold).
    y = fold_heads(call, (x, dt_raw, A, B, C, D, dt_bias), (2, 2, 0, 2, 2, 0, 0), 2)  # (b, l, h, p)
    return y, used
