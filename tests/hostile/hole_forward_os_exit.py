"""hole_forward_os_exit — ``os._exit(0)`` inside forward.

Attack: os._exit skips every handler (no exception, no finally): the process that runs the check's forward ends on
the spot with exit code 0. A checker that runs the probe in a child and trusts a zero exit code reports "valid";
one that runs it in-process dies with it.
"""

import os

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class VanishingGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        os._exit(0)


VARIANT = Variant(
    name="vanishing_gate",
    kind="fusion",
    summary="Gated fusion that exits quietly",
    fusion=VanishingGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
