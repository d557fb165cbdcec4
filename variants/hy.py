"""hy — the Phase-1 hybrid: learned per-channel gains on each pathway, both 0.5 at init."""

import torch
from torch import nn

from arena.api import Fusion, HParams, Variant, lr_mult, lr_scale


class ChannelGains(Fusion):
    """y = a ⊙ rwkv + b ⊙ mamba with per-channel gains a, b (D,) starting at 0.5; no input dependence."""

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.rwkv_gain = nn.Parameter(torch.full((d_model,), 0.5))
        self.mamba_gain = nn.Parameter(torch.full((d_model,), 0.5))

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a, b = self.rwkv_gain.abs(), self.mamba_gain.abs()  # (D,) each
        self.last_share = (a / (a + b + 1e-8)).detach()  # (D,): RWKV share of the gain mass
        return self.rwkv_gain * rwkv + self.mamba_gain * mamba  # (B, T, D)


VARIANT = Variant(
    name="hy",
    kind="fusion",
    summary="Per-channel learned gains on each pathway (0.5 each at init), summed",
    fusion=ChannelGains,
    hparams={"lr_scale": lr_scale(), "lr_mult": lr_mult()},
)
