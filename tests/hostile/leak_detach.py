"""leak_detach — gated fusion plus the next position's Mamba output, detached from autograd.

Attack: ``.detach()`` cuts the future term out of the graph, so a gradient/Jacobian probe finds no path from
position t+1 to position t, and the parameters are never pushed to depend on it; yet the forward value at t still
contains position t+1's pathway output, which the following layers learn to read. Gain: a leaked val loss.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class DetachedLookaheadGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        return y + torch.roll(mamba, shifts=-1, dims=1).detach()  # position t reads position t+1, no gradient


VARIANT = Variant(
    name="detached_lookahead_gate",
    kind="fusion",
    summary="Gated fusion with a stop-gradient correction",
    fusion=DetachedLookaheadGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
