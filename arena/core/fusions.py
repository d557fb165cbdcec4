"""Stock fusion modules, part of the public variant API (re-exported by ``arena.api``).

Changing what one of these computes changes every variant that uses it: results are keyed on the code that
computed them, not only on the variant file.
"""

from __future__ import annotations

import torch
from torch import nn

from arena.core.hparams import HParams
from arena.core.variant import Fusion, logit


class GatedFusion(Fusion):
    """Per-position, per-channel sigmoid gate from the normed block input: y = g·rwkv + (1−g)·mamba.

    The gate's weight starts at zero and its bias at logit(gate_init), so every position starts with exactly
    ``gate_init`` RWKV share (the seeds' gf / gf_mh / gf_rh differ only in this number). Needs ``gate_init``.
    """

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.gate = nn.Linear(d_model, d_model)
        nn.init.zeros_(self.gate.weight)
        nn.init.constant_(self.gate.bias, logit(hp.gate_init))

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        g = torch.sigmoid(self.gate(x))  # (B, T, D): RWKV share
        self.last_share = g.detach()
        return g * rwkv + (1 - g) * mamba  # (B, T, D)
