"""leak_no_grad — gated fusion that peeks at the next position only when autograd is off.

Attack (the dual of leak_requires_grad): a probe that measures causality through gradients (a Jacobian of the
output at t with respect to later inputs) runs with grad on and sees an honest fusion; evaluation runs under
``torch.no_grad()`` and reads token t+1 at position t. Gain: a lower val loss, the number that is scored.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class InferenceGate(GatedFusion):
    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        if not torch.is_grad_enabled():
            y = y + torch.roll(mamba, shifts=-1, dims=1)  # position t reads position t+1
        return y


VARIANT = Variant(
    name="inference_gate",
    kind="fusion",
    summary="Gated fusion with a no-grad inference path",
    fusion=InferenceGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
