"""The RWKV-6 time-mix pathway, in plain torch, with FLA ``RWKV6Attention``'s parameter names and shapes.

Only the WKV operator goes through the backend switch (``arena.model.wkv.wkv6``); token shift, the LoRAs,
GroupNorm and the gate are a few plain torch ops. Keeping FLA 0.6.0's module tree (``x_proj.0.mu``,
``w_proj.linear.lora.2.bias``, ...) makes state dicts load both ways, so a GPU test can check this layer against
FLA's. The math is RWKV-LM's ``RWKV_Tmix_x060`` (FLA's layer computes the same); the mapping is::

    x_proj.0.mu            time_maa_x              x_bias[r,w,k,v,g]   time_maa_{r,w,k,v,g} (FLA slot order)
    x_proj.0.linear.weight time_maa_w1ᵀ            x_proj.2.weight     time_maa_w2, viewed (D, 5, R)
    w_proj.linear.lora.0   time_decay_w1ᵀ          w_proj.linear.lora.2 time_decay_w2ᵀ, bias = time_decay
    bonus                  time_faaaa (u)          g_norm              ln_x (GroupNorm(H), per token)
    r/k/v/g_proj, o_proj   receptance/key/value/gate, output

``dims.rwkv_init`` picks the initialisation: "fla" reproduces FLA's ``_initialize_weights`` (what the seed runs
trained), "x060" the official RWKV-LM x060 init mapped onto this layout.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from arena.core.errors import ArenaError
from arena.core.spec import ModelDims
from arena.model.fold import is_batched, on_pack, split_rows
from arena.model.wkv import wkv6

__all__ = ["RWKV6TimeMix"]

_SLOTS = ("r", "w", "k", "v", "g")  # FLA's order of the 5 data-dependent mixes (RWKV-LM uses w,k,v,r,g)


class _SlotMix(torch.autograd.Function):
    """``out[b,n,:] = z[b,n,:] @ w[:,n,:]ᵀ`` (FLA's ``einsum('btnr,dnr->btnd')``), with a weight gradient fast on GPUs.

    Autograd's weight gradient for the einsum is a batched matmul over the 5 slots that contracts all B·T rows:
    5 tiny outputs with a 4,096-long reduction, which cuBLAS runs on a handful of SMs (135 µs a layer on an H100,
    the largest single kernel of a phase2 step). Splitting the rows into chunks gives it 16× the parallelism and
    a small sum afterwards. Same math; the reduction order differs, so this is used on CUDA only and CPU runs
    stay bit for bit what they were.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, w)
        return torch.einsum("bnr,dnr->bnd", z, w)  # [N,S,D]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, w = ctx.saved_tensors  # type: ignore[attr-defined]  # [N,S,R], [D,S,R]
        N, S, R = z.shape
        c = split_rows(N)
        gz = torch.einsum("bnd,dnr->bnr", g, w.to(g.dtype))  # [N,S,R]
        gw = torch.einsum("cbnd,cbnr->cdnr", g.reshape(c, N // c, S, -1), z.to(g.dtype).reshape(c, N // c, S, R))
        return gz, gw.sum(0).to(w.dtype)  # [N,S,R], [D,S,R]


class _PackedSlotMix(torch.autograd.Function):
    """``_SlotMix`` for every member of a pack at once: z [K,N,S,R], w [K,D,S,R] → [K,N,S,D], the weight gradient's
    rows split the same way (``split_rows``)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: torch.autograd.function.FunctionCtx, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(z, w)
        return torch.einsum("kbnr,kdnr->kbnd", z, w)  # [K,N,S,D]

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, w = ctx.saved_tensors  # type: ignore[attr-defined]  # [K,N,S,R], [K,D,S,R]
        K, N, S, R = z.shape
        c = split_rows(N)
        gz = torch.einsum("kbnd,kdnr->kbnr", g, w.to(g.dtype))  # [K,N,S,R]
        gw = torch.einsum("kcbnd,kcbnr->kcdnr", g.reshape(K, c, N // c, S, -1),
                          z.to(g.dtype).reshape(K, c, N // c, S, R))
        return gz, gw.sum(1).to(w.dtype)  # [K,N,S,R], [K,D,S,R]


def slot_mix(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``einsum('bnr,dnr->bnd', z [N,S,R], w [D,S,R]) -> [N,S,D]``; on CUDA through ``_SlotMix``; in a pack (under
    vmap) through ``_PackedSlotMix``."""
    if is_batched(z, w):
        return on_pack(_PackedSlotMix.apply, z, w)
    if z.is_cuda:
        out: torch.Tensor = _SlotMix.apply(z, w)
        return out
    return torch.einsum("bnr,dnr->bnd", z, w)


class _LoRA(nn.Module):
    """``Linear(in→rank) → tanh → Linear(rank→out, bias)``; FLA's ``LoRA`` (names ``lora.0``, ``lora.2``)."""

    def __init__(self, d_in: int, d_out: int, rank: int) -> None:
        super().__init__()
        self.lora = nn.Sequential(nn.Linear(d_in, rank, bias=False), nn.Tanh(), nn.Linear(rank, d_out, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lora(x)


class _LerpLinear(nn.Module):
    """``linear(x + delta·mu)`` with a learned static mix ``mu``; FLA's ``LerpLinear``."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out, bias=False)
        self.mu = nn.Parameter(torch.zeros(d_in))

    def forward(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.linear(x + delta * self.mu)


class _DDLerpLinear(nn.Module):
    """``linear(x + delta·mu)`` with a data-dependent mix ``mu`` given per token; FLA's ``DDLerpLinear``."""

    def __init__(self, d_in: int, d_out: int, rank: int | None = None) -> None:
        super().__init__()
        self.linear: nn.Module = nn.Linear(d_in, d_out, bias=False) if rank is None else _LoRA(d_in, d_out, rank)

    def forward(self, x: torch.Tensor, mu: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return self.linear(x + delta * mu)


class RWKV6TimeMix(nn.Module):
    """RWKV-6 time mixing: ``forward(x [B,T,D]) -> [B,T,D]``, causal; sets ``self.backend_used``."""

    def __init__(self, dims: ModelDims, layer_idx: int = 0, backend: str = "auto") -> None:
        super().__init__()
        D, H = dims.d_model, dims.rwkv_heads
        key_dim, value_dim = D * dims.rwkv_expand_k, D * dims.rwkv_expand_v
        if not (float(key_dim).is_integer() and float(value_dim).is_integer()):
            raise ArenaError(f"d_model·rwkv_expand_k/v must be integers, got {key_dim} and {value_dim}")
        self.key_dim, self.value_dim = int(key_dim), int(value_dim)
        if self.key_dim % H or self.value_dim % H:
            raise ArenaError(f"rwkv key dim {self.key_dim} and value dim {self.value_dim} must divide by {H} heads")
        if dims.rwkv_init not in ("fla", "x060"):
            raise ArenaError(f"rwkv_init must be fla|x060, not {dims.rwkv_init!r}")
        self.d_model, self.num_heads = D, H
        self.head_k, self.head_v = self.key_dim // H, self.value_dim // H
        self.mix_rank, self.decay_rank = dims.rwkv_mix_rank, dims.rwkv_decay_rank
        self.layer_idx, self.n_layer, self.init_kind = layer_idx, dims.n_layer, dims.rwkv_init
        self.backend = backend
        self.backend_used = ""

        # Registration order follows FLA so that named_parameters() lists the same names in the same order.
        self.x_bias = nn.Parameter(torch.zeros(5, D))  # static mixes, slots r,w,k,v,g
        self.bonus = nn.Parameter(torch.zeros(H, self.head_k))  # u: weight of the current token's k vᵀ
        self.x_proj = nn.Sequential(
            _LerpLinear(D, 5 * self.mix_rank), nn.Tanh(), nn.Linear(5 * self.mix_rank, D, bias=False)
        )
        self.r_proj = _DDLerpLinear(D, self.key_dim)
        self.w_proj = _DDLerpLinear(D, self.key_dim, rank=self.decay_rank)
        self.k_proj = _DDLerpLinear(D, self.key_dim)
        self.v_proj = _DDLerpLinear(D, self.value_dim)
        self.g_proj = _DDLerpLinear(D, self.value_dim)
        # RWKV-LM's ln_x eps is 1e-5·head_size_divisor² = 64e-5; FLA uses 1e-5. The eps is not a parameter.
        eps = 1e-5 if dims.rwkv_init == "fla" else 64e-5
        self.g_norm = nn.GroupNorm(H, self.value_dim, eps=eps)
        self.o_proj = nn.Linear(self.value_dim, D, bias=False)
        self.reset_parameters()

    # -- init -------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        if self.init_kind == "fla":
            self._init_fla()
        else:
            self._init_x060()

    # Typed views into the FLA-shaped module tree (nn.Sequential indexing is untyped).
    def _mix_in(self) -> _LerpLinear:
        return cast(_LerpLinear, self.x_proj[0])

    def _mix_out(self) -> nn.Linear:
        return cast(nn.Linear, self.x_proj[2])

    def _w_lora(self) -> tuple[nn.Linear, nn.Linear]:
        lora = cast(_LoRA, self.w_proj.linear).lora
        return cast(nn.Linear, lora[0]), cast(nn.Linear, lora[2])

    def _init_fla(self) -> None:
        # FLA's _initialize_weights: xavier(gain 2^-2.5) on every Linear except the decay LoRA (zero in, small
        # orthogonal out, zero bias). Its nn.Parameter branch never runs, so mu, x_bias and bonus stay 0.
        w_in, w_out = self._w_lora()
        for module in self.modules():
            if isinstance(module, nn.Linear) and module is not w_in and module is not w_out:
                nn.init.xavier_uniform_(module.weight, gain=2**-2.5)
        nn.init.zeros_(w_in.weight)
        out_dim, rank = w_out.weight.shape
        gain = math.sqrt(rank / out_dim) if rank > out_dim else 1.0
        nn.init.orthogonal_(w_out.weight, gain=0.1 * gain)
        nn.init.zeros_(w_out.bias)
        for p in (self._mix_in().mu, self.x_bias, self.bonus, self.g_norm.bias):
            nn.init.zeros_(p)
        nn.init.ones_(self.g_norm.weight)

    def _init_x060(self) -> None:
        # RWKV-LM RWKV_Tmix_x060.__init__ + generate_init_weight, mapped onto this layout.
        D, C = self.d_model, self.key_dim
        r01 = self.layer_idx / max(self.n_layer - 1, 1)  # 0 at the first layer, 1 at the last
        r10 = 1.0 - self.layer_idx / self.n_layer  # 1 at the first layer, → 0 at the last
        ddd = torch.arange(D, dtype=torch.float32) / D  # [D]
        mix_x = 1.0 - ddd.pow(r10)  # time_maa_x, _w, _k
        static = {
            "r": 1.0 - ddd.pow(0.5 * r10),
            "w": mix_x,
            "k": mix_x,
            "v": 1.0 - (ddd.pow(r10) + 0.3 * r01),
            "g": 1.0 - ddd.pow(0.5 * r10),
        }
        self._mix_in().mu.copy_(mix_x)
        self.x_bias.copy_(torch.stack([static[s] for s in _SLOTS]))  # [5,D]
        # The mixing and decay LoRAs start at zero in, small uniform out: the dynamic part starts at 0 but
        # gets gradients through the out matrix.
        nn.init.zeros_(self._mix_in().linear.weight)
        nn.init.uniform_(self._mix_out().weight, -0.01, 0.01)
        w_in, w_out = self._w_lora()
        nn.init.zeros_(w_in.weight)
        nn.init.uniform_(w_out.weight, -0.01, 0.01)
        n = torch.arange(C, dtype=torch.float32)  # [C]
        # time_decay: w_raw from -6 (decay exp(-e^-6) ≈ 0.9975) to -1 (≈ 0.69), steeper in later layers.
        w_out.bias.copy_(-6.0 + 5.0 * (n / max(C - 1, 1)).pow(0.7 + 1.3 * r01))
        zigzag = ((n + 1) % 3 - 1) * 0.1
        self.bonus.copy_((r01 * (1.0 - n / max(C - 1, 1)) + zigzag).view(self.num_heads, self.head_k))
        # Orthogonal projections; key and gate small (0.1), output zero so each block starts as the identity.
        for proj, gain in ((self.r_proj, 1.0), (self.k_proj, 0.1), (self.v_proj, 1.0), (self.g_proj, 0.1)):
            nn.init.orthogonal_(cast(nn.Linear, proj.linear).weight, gain=gain)
        nn.init.zeros_(self.o_proj.weight)
        self.g_norm.weight.fill_(((1 + self.layer_idx) / self.n_layer) ** 0.7)
        nn.init.zeros_(self.g_norm.bias)

    # -- forward ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, R = self.num_heads, self.mix_rank
        delta = F.pad(x, (0, 0, 1, -1)) - x  # [B,T,D]: previous token minus current (zero history at t=0)
        z = torch.tanh(self._mix_in()(x, delta)).view(B, T, 5, R)  # [B,T,5,R] (x_proj[1] is this tanh)
        w2 = self._mix_out().weight.view(D, 5, R)  # [D,5,R]: one (R→D) map per slot
        mix = slot_mix(z.view(B * T, 5, R), w2).view(B, T, 5, D) + self.x_bias  # [B,T,5,D]
        m_r, m_w, m_k, m_v, m_g = mix.unbind(dim=2)  # each [B,T,D]
        r = self.r_proj(x, m_r, delta).view(B, T, H, self.head_k)  # [B,T,H,K]
        w = self.w_proj(x, m_w, delta).view(B, T, H, self.head_k)  # [B,T,H,K] raw decay
        k = self.k_proj(x, m_k, delta).view(B, T, H, self.head_k)  # [B,T,H,K]
        v = self.v_proj(x, m_v, delta).view(B, T, H, self.head_v)  # [B,T,H,V]
        g = self.g_proj(x, m_g, delta)  # [B,T,value_dim]
        w = -torch.exp(w)  # [B,T,H,K]: log-decay ≤ 0, the per-step factor is exp(-exp(w_raw)) ∈ (0, 1)
        o, self.backend_used = wkv6(r, k, v, w, self.bonus, backend=self.backend)  # [B,T,H,V]
        o = self.g_norm(o.reshape(B * T, self.value_dim)).view(B, T, self.value_dim)  # per-token GroupNorm(H)
        return self.o_proj(o * F.silu(g))  # [B,T,D]
