"""leak_train_mode — gated fusion that peeks at the next position only in training mode (self.training).

Attack: a probe that puts the model in eval mode (the old check did) sees an honest fusion. Training reads token
t+1 at position t, so the train curve collapses towards zero: a run that looks like a breakthrough on every
train-loss plot and diagnostic, and a check that certified it causal.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class TrainTimeGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        if self.training:
            y = y + torch.roll(mamba, shifts=-1, dims=1)  # position t reads position t+1
        return y


VARIANT = Variant(
    name="train_time_gate",
    kind="fusion",
    summary="Gated fusion with a training-time auxiliary path",
    fusion=TrainTimeGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
