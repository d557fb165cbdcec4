"""leak_zero_init — y = gated_mix + w · roll(mamba, -1) with w a learnable per-channel weight that starts at 0.

Attack: at initial weights the future term is exactly zero, so a probe of the freshly built model (the old check)
sees an honest gated fusion, and so does a gradient probe of the output with respect to the inputs (∂y/∂mamba[t+1]
= w = 0). But ∂loss/∂w is not zero: the first optimizer steps grow w and the model learns to read token t+1.
"""

import torch
from torch import nn

from arena.api import GatedFusion, HParams, Variant, gate_init, lr_mult


class ResidualLookaheadGate(GatedFusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.w = nn.Parameter(torch.zeros(d_model))  # (D,): starts at zero, learned

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        return y + self.w * torch.roll(mamba, shifts=-1, dims=1)  # position t reads position t+1, scaled by w


VARIANT = Variant(
    name="residual_lookahead_gate",
    kind="fusion",
    summary="Gated fusion with a learned residual correction",
    fusion=ResidualLookaheadGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
