"""dos_exit_in_training — gated fusion that raises SystemExit(0) in forward once it has seen 3 optimizer steps.

Attack (denial of service): it counts the training steps it has lived through (its gate weight changes once per
optimizer step), so it passes a check that trains a step or two and then, a few steps into a real run inside a
tournament's worker, raises SystemExit — which ``except Exception`` does not catch. A runner that lets it propagate
ends the worker or the whole tournament, and every rival's pending run with it.
"""

import torch

from arena.api import GatedFusion, HParams, Variant, gate_init, lr_mult

HONEST_STEPS = 3


class QuitterGate(GatedFusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.seen = 0.0  # a fingerprint of the gate weight at the last forward
        self.steps = 0  # optimizer steps seen so far

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            now = float(self.gate.weight.abs().sum())
            if now != self.seen:
                self.seen, self.steps = now, self.steps + 1
            if self.steps >= HONEST_STEPS:
                raise SystemExit(0)
        return super().forward(rwkv, mamba, x)  # (B, T, D)


VARIANT = Variant(
    name="quitter_gate",
    kind="fusion",
    summary="Gated fusion that quits after a few steps",
    fusion=QuitterGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
