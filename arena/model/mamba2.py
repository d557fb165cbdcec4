"""The Mamba-2 pathway: mamba_ssm 2.x ``Mamba2``'s parameters and math, with only the SSD behind a backend switch.

Parameter names, shapes, init and the RNG draw order match ``mamba_ssm.modules.mamba2.Mamba2(d_model,
d_state, d_conv, expand, headdim, ngroups, rmsnorm=True, norm_before_gate=False, bias=False, conv_bias=True,
D_has_hdim=False, chunk_size)``, so state dicts load both ways (and the same seed gives the same weights). Its
optional gated-MLP part (``d_ssm < d_inner``) is not used: d_ssm = d_inner, so in_proj splits into [z, xBC, dt].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from arena.core.spec import ModelDims
from arena.model import backend as _backend
from arena.model.fold import fold_heads
from arena.model.ssd import ssd, ssd_backend

__all__ = ["GatedRMSNorm", "Mamba2Mixer"]


class GatedRMSNorm(nn.Module):
    """RMSNorm(y · silu(z)) per group of ``group_size`` channels (mamba_ssm's norm_before_gate=False), in torch.

    Computes in fp32 (or fp64) and returns y's dtype, as mamba_ssm's Triton ``RMSNormGated`` does.
    """

    def __init__(self, d: int, group_size: int, eps: float = 1e-5) -> None:
        super().__init__()
        if d % group_size:
            raise ValueError(f"d={d} is not a multiple of group_size={group_size}")
        self.group_size = group_size
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        cd = torch.promote_types(y.dtype, torch.float32)  # fp32 at least (fp64 stays fp64, for the tests)
        gated = y.to(cd) * F.silu(z.to(cd))  # (B, T, d)
        grouped = gated.unflatten(-1, (-1, self.group_size))  # (B, T, G, d/G)
        normed = grouped * torch.rsqrt(grouped.square().mean(dim=-1, keepdim=True) + self.eps)  # (B, T, G, d/G)
        return (normed.flatten(-2) * self.weight.to(cd)).to(y.dtype)  # (B, T, d)


class Mamba2Mixer(nn.Module):
    """Mamba-2 sequence mixer: ``forward(x [B,T,D]) -> [B,T,D]``; sets ``backend_used`` and ``conv_backend_used``."""

    def __init__(self, dims: ModelDims, layer_idx: int = 0, backend: str = "auto") -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.backend = backend
        self.d_model = dims.d_model
        self.d_state = dims.mamba_d_state
        self.d_conv = dims.mamba_d_conv
        self.headdim = dims.mamba_head_dim
        self.ngroups = dims.mamba_n_groups
        self.chunk_size = dims.mamba_chunk
        self.d_inner = dims.mamba_expand * dims.d_model
        if self.d_inner % self.headdim:
            raise ValueError(f"d_inner={self.d_inner} is not a multiple of mamba_head_dim={self.headdim}")
        self.nheads = self.d_inner // self.headdim
        if self.nheads % self.ngroups:
            raise ValueError(f"{self.nheads} Mamba-2 heads cannot be split into {self.ngroups} groups")
        self.dt_limit = (0.0, math.inf)
        self.backend_used = ""
        self.conv_backend_used = ""

        # The draws below happen in mamba_ssm's order (in_proj, conv1d, dt, A), so one seed gives its weights.
        d_in_proj = 2 * self.d_inner + 2 * self.ngroups * self.d_state + self.nheads  # [z, xBC, dt]
        self.in_proj = nn.Linear(self.d_model, d_in_proj, bias=False)
        conv_dim = self.d_inner + 2 * self.ngroups * self.d_state  # the conv runs over x, B and C together
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, kernel_size=self.d_conv, groups=conv_dim, padding=self.d_conv - 1, bias=True
        )

        # dt log-uniform in [1e-3, 0.1], floored at 1e-4, stored as the inverse softplus so that softplus(dt_bias) = dt.
        dt = torch.exp(torch.rand(self.nheads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))  # (H,)
        dt = dt.clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # (H,)
        A = torch.empty(self.nheads, dtype=torch.float32).uniform_(1.0, 16.0)  # (H,)
        self.A_log = nn.Parameter(torch.log(A))  # (H,); A = -exp(A_log) < 0
        self.D = nn.Parameter(torch.ones(self.nheads))  # (H,)
        self.norm = GatedRMSNorm(self.d_inner, group_size=self.d_inner // self.ngroups, eps=1e-5)
        self.out_proj = nn.Linear(self.d_inner, self.d_model, bias=False)

    def _conv(self, xBC: torch.Tensor, use_kernel: bool) -> torch.Tensor:
        """Depthwise causal conv + silu over time; [B, T, C] → [B, T, C]."""
        seq = xBC.shape[1]
        weight = self.conv1d.weight.squeeze(1)  # (C, W)
        if use_kernel:
            conv_fn = _backend.causal_conv1d_fn()
            if not isinstance(conv_fn, str):
                self.conv_backend_used = "causal_conv1d"
                # Channel-first contiguous: the channel-last layout the kernel also takes needs C % 8 == 0 and a
                # row stride % 8 == 0, which a slice of in_proj's output does not have at our small sizes.
                def call(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
                    return conv_fn(x, w, b, activation="silu")  # (B, C, T)

                # Packed (under vmap): the K models' channels as one depthwise call (arena.model.fold).
                out = fold_heads(call, (xBC.transpose(1, 2).contiguous(), weight, self.conv1d.bias), (1, 0, 0), 1)
                return out.transpose(1, 2)  # (B, T, C)
        self.conv_backend_used = "torch"
        # padding = W-1 on both sides; keeping the first T outputs makes position t see only t-W+1..t.
        out = F.conv1d(xBC.transpose(1, 2), self.conv1d.weight, self.conv1d.bias, padding=self.d_conv - 1,
                       groups=xBC.shape[-1])  # (B, C, T + W - 1)
        return F.silu(out[..., :seq]).transpose(1, 2)  # (B, T, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, seq, _ = x.shape
        gn = self.ngroups * self.d_state
        zxbcdt = self.in_proj(x)  # (B, T, 2·d_inner + 2·G·N + H)
        z, xBC, dt_raw = torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1)
        used = ssd_backend(self.backend, x)
        xBC = self._conv(xBC, use_kernel=used == "kernel")  # (B, T, d_inner + 2·G·N)
        xs, B, C = torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
        # At least fp32, so that a low-precision A_log cannot give -inf.
        A = -torch.exp(self.A_log.to(torch.promote_types(self.A_log.dtype, torch.float32)))  # (H,)
        y, self.backend_used = ssd(
            xs.unflatten(-1, (self.nheads, self.headdim)),  # (B, T, H, P)
            dt_raw,  # (B, T, H)
            A,
            B.unflatten(-1, (self.ngroups, self.d_state)),  # (B, T, G, N)
            C.unflatten(-1, (self.ngroups, self.d_state)),  # (B, T, G, N)
            self.D,
            self.dt_bias,
            chunk_size=self.chunk_size,
            dt_limit=self.dt_limit,
            backend=used,
        )  # (B, T, H, P)
        y = self.norm(y.reshape(bsz, seq, self.d_inner), z)  # (B, T, d_inner)
        return self.out_proj(y)  # (B, T, D)
