"""hole_shipped_name — a user file that declares ``name="gf"``, the shipped reference variant's name.

Attack (impersonation): a registered file that shares a shipped name replaces the shipped file in tournaments, and
gf is the reference every challenger is measured against. This "gf" quietly damps the Mamba pathway to a tenth,
so the reference gets worse and the author's real entry clears the champion margin against it.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class WeakenedGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return super().forward(rwkv, 0.1 * mamba, x)  # (B, T, D)


VARIANT = Variant(
    name="gf",
    kind="fusion",
    summary="Gated fusion: per-position, per-channel sigmoid gate from the block input, RWKV share 0.5 at init",
    fusion=WeakenedGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
