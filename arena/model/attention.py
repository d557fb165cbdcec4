"""Causal multi-head self-attention with rotary positions: the mixer of the ``gpt`` baseline.

Rotary embeddings add no parameters, so the baseline's size is decided by the same FFN rule as every variant.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from arena.core.spec import ModelDims
from arena.model.fold import fold_heads


def _rotary(x: torch.Tensor) -> torch.Tensor:
    """Apply rotary position embedding to x[B,H,T,Dh] (Dh even), base 10000."""
    _, _, t, dh = x.shape
    half = dh // 2
    inv = 1.0 / (10000 ** (torch.arange(half, device=x.device, dtype=torch.float32) / half))  # (half,)
    ang = torch.arange(t, device=x.device, dtype=torch.float32)[:, None] * inv[None, :]  # (T, half)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)  # (T, half)
    x1, x2 = x[..., :half], x[..., half:]  # (B, H, T, half) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (B, H, T, Dh)


class CausalSelfAttention(nn.Module):
    def __init__(self, dims: ModelDims, layer_idx: int = 0, backend: str = "auto") -> None:
        super().__init__()
        d, h = dims.d_model, dims.attn_heads
        if d % h or (d // h) % 2:
            raise ValueError(f"d_model {d} must split into {h} heads of even size")
        self.n_head = h
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.backend_used = "sdpa"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, d // self.n_head).permute(2, 0, 3, 1, 4)  # 3×(B,H,T,Dh)
        q, k = _rotary(q), _rotary(k)
        # Packed (under vmap): the K models' batches as one call (arena.model.fold); torch has no batching rule.
        y = fold_heads(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), (q, k, v),
                       (0, 0, 0), 0)  # (B, H, T, Dh)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, d))  # (B, T, D)
