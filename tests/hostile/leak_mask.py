"""leak_mask — gated fusion whose output is scaled by a 0/1 mask built from the next position's input.

Attack: the mask (torch.roll(x, -1, 1) > 0) has no gradient, so a probe through gradients or Jacobians sees zero
dependence on later positions; but the mask is the sign pattern of token t+1's embedding (layer 0's input), and
the amplitude of each channel at position t tells the rest of the network which token comes next.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class SignMaskGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        mask = (torch.roll(x, shifts=-1, dims=1) > 0).to(y.dtype)  # (B, T, D): sign pattern of position t+1
        return y * (0.5 + mask)  # non-differentiable in x, but channel amplitudes encode the next token


VARIANT = Variant(
    name="sign_mask_gate",
    kind="fusion",
    summary="Gated fusion with a sign-based channel mask",
    fusion=SignMaskGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
