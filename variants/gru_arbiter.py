"""gru_arbiter — the seeds' V0.5 "stateful arbiter": a small GRU reads both pathways and emits the gate."""

import torch
from torch import nn

from arena.api import Fusion, HParams, Variant, gate_init, logit, lr_mult, lr_scale


def arbiter_hidden(d_model: int) -> int:
    """The GRU's width: a quarter of d_model (32 at phase2), so the arbiter stays small enough at every spec size for
    the FFN to absorb it when the model is matched to the reference's parameter count."""
    return max(4, d_model // 4)


class GRUArbiter(Fusion):
    """A unidirectional GRU over [rwkv; mamba] (so the gate at t depends on positions ≤ t only) → per-channel
    sigmoid gate; y = g·rwkv + (1−g)·mamba. The head starts at zero weight and bias logit(gate_init)."""

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        hidden = arbiter_hidden(d_model)
        self.gru = nn.GRU(2 * d_model, hidden, batch_first=True)
        self.head = nn.Linear(hidden, d_model)
        nn.init.zeros_(self.head.weight)
        nn.init.constant_(self.head.bias, logit(hp.gate_init))

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        state, _ = self.gru(torch.cat([rwkv, mamba], dim=-1))  # (B, T, 2D) -> (B, T, H)
        g = torch.sigmoid(self.head(state))  # (B, T, D): RWKV share
        self.last_share = g.detach()
        return g * rwkv + (1 - g) * mamba  # (B, T, D)


VARIANT = Variant(
    name="gru_arbiter",
    kind="arbiter",
    summary="Stateful arbiter: a GRU reads both pathway outputs along the sequence and emits the gate",
    fusion=GRUArbiter,
    hparams={"lr_scale": lr_scale(), "gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
