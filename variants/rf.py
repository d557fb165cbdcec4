"""rf — residual fusion: the RWKV-6 output is the base and the Mamba-2 output corrects it."""

import torch
from torch import nn

from arena.api import Fusion, HParam, HParams, Variant, lr_mult, lr_scale


class ResidualCorrection(Fusion):
    """y = rwkv + c ⊙ mamba, a per-channel correction scale c (D,) starting small (corr_init)."""

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.corr = nn.Parameter(torch.full((d_model,), hp.corr_init))

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        c = self.corr.abs()  # (D,)
        self.last_share = (1 / (1 + c)).detach()  # (D,): RWKV share of the unit-gain mass
        return rwkv + self.corr * mamba  # (B, T, D)


VARIANT = Variant(
    name="rf",
    kind="fusion",
    summary="Residual fusion: RWKV output plus a learned per-channel Mamba correction (0.1 at init)",
    fusion=ResidualCorrection,
    hparams={"lr_scale": lr_scale(), "corr_init": HParam(low=0.0, high=1.0, default=0.1), "lr_mult": lr_mult()},
)
