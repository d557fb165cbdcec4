"""ws — one learnable scalar weight shared by all positions and channels."""

import torch
from torch import nn

from arena.api import Fusion, HParams, Variant, gate_init, logit, lr_mult, lr_scale


class ScalarWeight(Fusion):
    """y = α·rwkv + (1−α)·mamba with α = sigmoid(s), one scalar s starting at logit(gate_init)."""

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.s = nn.Parameter(torch.tensor(logit(hp.gate_init)))

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.s)  # (): RWKV share
        self.last_share = a.detach().reshape(1)
        return a * rwkv + (1 - a) * mamba  # (B, T, D)


VARIANT = Variant(
    name="ws",
    kind="fusion",
    summary="One learnable scalar weight α: α·RWKV + (1−α)·Mamba",
    fusion=ScalarWeight,
    hparams={"lr_scale": lr_scale(), "gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
