"""leak_requires_grad — gated fusion that peeks at the next position only when its inputs require grad.

Attack: a probe under ``torch.no_grad()`` (the old check's) gets inputs without ``requires_grad`` and sees an
honest fusion; every training forward reads token t+1 at position t. Gain: the same as a training-mode leak —
a collapsing train curve — behind a certificate of causality.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class AutogradGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        if rwkv.requires_grad:
            y = y + torch.roll(mamba, shifts=-1, dims=1)  # position t reads position t+1
        return y


VARIANT = Variant(
    name="autograd_gate",
    kind="fusion",
    summary="Gated fusion with a gradient-path shortcut",
    fusion=AutogradGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
