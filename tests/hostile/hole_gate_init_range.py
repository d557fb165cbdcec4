"""hole_gate_init_range — declares ``gate_init`` as HParam(low=0.0, high=1.5, default=0.5).

Attack: gate_init is an RWKV share; outside (0, 1) the "gate" extrapolates (1.5·rwkv − 0.5·mamba) or pins one
pathway off. A wider declared range lets ``arena tune`` and ``--hp`` reach values no honest variant may use, and
the tuned entry then competes as if it were the same variant.
"""

import torch

from arena.api import Fusion, HParam, HParams, Variant, lr_mult


class LinearMix(Fusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.share = hp.gate_init

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.share * rwkv + (1 - self.share) * mamba  # (B, T, D)


VARIANT = Variant(
    name="wide_gate",
    kind="fusion",
    summary="Linear mix with a wide share range",
    fusion=LinearMix,
    hparams={"gate_init": HParam(low=0.0, high=1.5, default=0.5), "lr_mult": lr_mult()},
)
