"""cp — concatenate both pathway outputs and project back to d_model."""

import torch
from torch import nn

from arena.api import Fusion, HParams, Variant, lr_mult, lr_scale


class ConcatProject(Fusion):
    """y = W [rwkv; mamba]; W (D, 2D) starts as [½I ½I] plus small noise, i.e. as an even average."""

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.proj = nn.Linear(2 * d_model, d_model, bias=False)
        eye = torch.eye(d_model)
        noise = torch.randn(d_model, 2 * d_model) * 0.02  # the draws nn.init would follow with: same stream
        self.proj.weight = nn.Parameter(torch.cat([0.5 * eye, 0.5 * eye], dim=1) + noise)  # (D, 2D)

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.cat([rwkv, mamba], dim=-1))  # (B, T, 2D) -> (B, T, D)


VARIANT = Variant(
    name="cp",
    kind="fusion",
    summary="Concatenate both pathway outputs, then a linear projection back to d_model",
    fusion=ConcatProject,
    hparams={"lr_scale": lr_scale(), "lr_mult": lr_mult()},
)
