"""The RWKV-6 WKV operator: a per-step recurrent reference, a chunk-parallel pure-torch form, and a dispatcher.

Layout and conventions (the same as FLA's ``chunk_rwkv6`` called the way ``RWKV6Attention`` calls it):

* ``r, k, w``: ``[B, T, H, K]``; ``v``: ``[B, T, H, V]``; ``u`` (bonus): ``[H, K]``; states ``[B, H, K, V]``.
* ``w`` is the **log-decay** (``w = -exp(w_raw) <= 0``): the state is multiplied by ``exp(w_t)`` per step.
* scale is 1.0 (RWKV does not scale the receptance).

The recurrence, for every step t::

    o_t = r_t · (h + (u ⊙ k_t) v_tᵀ)          # read the state, plus a bonus for the current token only
    h   = h · exp(w_t) + k_t v_tᵀ              # decay after the read, then write

References compute in fp32 (fp64 when the inputs are fp64), return ``o`` in the input dtype and the final
state in the compute dtype. No module here imports FLA at import time; the kernel is fetched lazily through
``arena.model.backend`` only when the dispatcher picks it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from arena.model import backend as _backend
from arena.model.fold import fold_heads

__all__ = ["wkv6", "wkv6_chunk_ref", "wkv6_recurrent_ref"]

# Chunk length the dispatcher uses on CPU. The intra-chunk cost per token grows with the chunk (a [C,C,K]
# pairwise decay), the inter-chunk loop with T/C. Fwd+bwd at the seed size (K=16, V=32, T 64..512, 2 cores),
# 8 and 16 are about equal and 2x faster than 32.
CPU_CHUNK = 16


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # fp64 stays fp64 so the references can serve as tight oracles; everything else is upcast to fp32.
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_shapes(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> None:
    if r.dim() != 4 or k.shape != r.shape or w.shape != r.shape:
        raise ValueError(f"r, k, w must share a [B,T,H,K] shape, got {tuple(r.shape)}, {tuple(k.shape)}, "
                         f"{tuple(w.shape)}")
    if v.dim() != 4 or v.shape[:3] != r.shape[:3]:
        raise ValueError(f"v must be [B,T,H,V] with r's B,T,H, got {tuple(v.shape)} vs {tuple(r.shape)}")
    if u.shape != r.shape[2:]:
        raise ValueError(f"u must be [H,K] = {tuple(r.shape[2:])}, got {tuple(u.shape)}")


def wkv6_recurrent_ref(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    h0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-step recurrence (the test oracle). Returns ``(o [B,T,H,V] in r's dtype, hT [B,H,K,V] fp32/fp64)``.

    O(T) Python steps: slow, but each line is the definition. Differentiable by autograd (no in-place ops).
    """
    _check_shapes(r, k, v, w, u)
    B, T, H, K = r.shape
    V = v.shape[-1]
    dt = _compute_dtype(r)
    rf, kf, vf, wf, uf = (x.to(dt) for x in (r, k, v, w, u))
    h = torch.zeros(B, H, K, V, dtype=dt, device=r.device) if h0 is None else h0.to(dt)  # [B,H,K,V]
    outs = []
    for t in range(T):
        kv = kf[:, t, :, :, None] * vf[:, t, :, None, :]  # [B,H,K,V]
        read = h + uf[None, :, :, None] * kv  # [B,H,K,V]: the bonus u weights only the current token
        outs.append(torch.einsum("bhk,bhkv->bhv", rf[:, t], read))  # [B,H,V]
        h = h * wf[:, t, :, :, None].exp() + kv  # [B,H,K,V]: decay after the read
    o = torch.stack(outs, dim=1) if outs else vf.new_zeros(B, 0, H, V)  # [B,T,H,V]
    return o.to(r.dtype), h


def wkv6_chunk_ref(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    h0: torch.Tensor | None = None,
    chunk_size: int = 32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk-parallel WKV in pure torch; same contract as :func:`wkv6_recurrent_ref`.

    Inside a chunk, the pairwise decay between a query at i and a key at j < i is kept per channel,
    ``exp(Σ_{j<s<i} w_s)``, so every exponent is <= 0 and nothing overflows however strong the decay (no
    division by a cumulative product, unlike the factored ``(r·e^b)(k·e^-b)ᵀ`` form). The cost is a
    ``[C, C, K]`` tensor per chunk, fine for the small K and C here.
    Across chunks the state is carried by a short loop over T/C chunks. T need not be a multiple of the chunk:
    the tail is padded with k = v = r = 0 and w = 0 (no decay), which leaves outputs and final state unchanged.
    """
    _check_shapes(r, k, v, w, u)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    B, T, H, K = r.shape
    V = v.shape[-1]
    dt = _compute_dtype(r)
    C = chunk_size
    N = max(1, -(-T // C))  # number of chunks (at least one so T=0 still returns a state)
    pad = N * C - T

    def to_chunks(x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x.to(dt), (0, 0, 0, 0, 0, pad))  # [B,N*C,H,D]
        return x.view(B, N, C, H, x.shape[-1]).permute(0, 3, 1, 2, 4)  # [B,H,N,C,D]

    rc, kc, vc, wc = (to_chunks(x) for x in (r, k, v, w))
    uf = u.to(dt)  # [H,K]

    # Every log-decay sum below adds terms of one sign over exactly the steps it spans, never a difference of
    # two long prefix sums: with strong decays a prefix reaches -1e4 in a chunk, and subtracting two of them
    # would cost ~|prefix|·eps of absolute error in the exponent of terms that should be O(1).
    w_prev = F.pad(wc, (0, 0, 1, -1))  # [B,H,N,C,K]: w_{i-1} at row i (0 at the chunk start)
    b_prev = w_prev.cumsum(dim=3)  # [B,H,N,C,K]: Σ_{s<i} w_s, decay from the chunk start to just before i
    to_end = F.pad(wc.flip(3).cumsum(dim=3), (0, 0, 1, -1)).flip(3)  # [B,H,N,C,K]: Σ_{s>j} w_s
    b_last = wc.sum(dim=3)  # [B,H,N,K]: whole-chunk log-decay

    # Intra-chunk: A[i,j] = Σ_k r_ik k_jk exp(Σ_{j<s<i} w_sk) for j < i (strictly causal part). The segment
    # sums are a cumulative sum over i of w_{i-1}, kept only where i-1 > j.
    strict = torch.ones(C, C, dtype=torch.bool, device=r.device).tril(-1)  # [C,C] True where j < i
    inner = strict.tril(-2)  # [C,C] True where j < i-1: w_{i-1} lies strictly between j and i
    seg = (w_prev[..., :, None, :] * inner[:, :, None]).cumsum(dim=3)  # [B,H,N,C,C,K]: Σ_{j<s<i} w_s
    # Mask before exp: the j >= i entries are 0 (not a decay) and must not contribute; -inf gives exp = 0.
    decay = seg.masked_fill(~strict[:, :, None], float("-inf")).exp()  # [B,H,N,C,C,K]
    A = torch.einsum("bhnik,bhnjk,bhnijk->bhnij", rc, kc, decay)  # [B,H,N,C,C]
    bonus = (rc * kc * uf[None, :, None, None, :]).sum(-1)  # [B,H,N,C]: r_i·(u⊙k_i), the diagonal
    o = A @ vc + bonus[..., None] * vc  # [B,H,N,C,V]

    # What each chunk adds to the state, decayed to the chunk end: Σ_j diag(exp(Σ_{s>j} w_s)) k_j v_jᵀ.
    U = (kc * to_end.exp()).transpose(-1, -2) @ vc  # [B,H,N,K,V]
    h = torch.zeros(B, H, K, V, dtype=dt, device=r.device) if h0 is None else h0.to(dt)  # [B,H,K,V]
    carried = []
    for n in range(N):  # sequential only over chunks
        carried.append(h)
        h = h * b_last[:, :, n, :, None].exp() + U[:, :, n]  # [B,H,K,V]
    S = torch.stack(carried, dim=2)  # [B,H,N,K,V]: state entering each chunk
    o = o + (rc * b_prev.exp()) @ S  # [B,H,N,C,V]: read the carried state, decayed to step i-1

    o = o.permute(0, 2, 3, 1, 4).reshape(B, N * C, H, V)[:, :T]  # [B,T,H,V]
    return o.to(r.dtype), h


def wkv6(
    r: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    w: torch.Tensor,
    u: torch.Tensor,
    backend: str = "auto",
) -> tuple[torch.Tensor, str]:
    """WKV output ``o [B,T,H,V]`` (input dtype) and the backend used ('kernel'|'torch_chunk'|'torch_recurrent').

    'kernel' is FLA's ``chunk_rwkv6`` (Triton, CUDA only), called with the log-decay and scale 1.0.
    """
    kernel: Any = _backend.fla_chunk_rwkv6() if r.is_cuda or backend == "kernel" else "not a CUDA tensor"
    used = _backend.resolve(backend, r, kernel)

    def call(r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if used == "kernel":
            return kernel(r, k, v, w, u, scale=1.0)[0]
        if used == "torch_recurrent":
            return wkv6_recurrent_ref(r, k, v, w, u)[0]
        return wkv6_chunk_ref(r, k, v, w, u, chunk_size=CPU_CHUNK)[0]

    # In a packed model (under vmap) the K models' heads run as one call of K·H heads (arena.model.fold).
    o = fold_heads(call, (r, k, v, w, u), (2, 2, 2, 2, 0), 2)  # [B,T,H,V]
    return o, used
