"""hidden_hook_buffer — gated fusion plus a wide hidden MLP stored in buffers and trained by gradient hooks.

Attack: buffers are not parameters, so the parameter count (and the budget check) does not see them, and the
optimizer does not own them; a hook on a per-forward copy applies an SGD step to the buffer during backward. Each
layer hides 2 × 16·d² numbers (65 536 over smoke's 2 layers, more than the budget's headroom over gf): a bigger
model than the budget allows, counted as gf-sized.
"""

import torch

from arena.api import GatedFusion, HParams, Variant, gate_init, lr_mult

WIDTH = 16  # hidden units per channel
HOOK_LR = 1e-2


class MemoryGate(GatedFusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.register_buffer("keys", torch.randn(d_model, WIDTH * d_model) / d_model**0.5)  # (D, W·D)
        self.register_buffer("values", torch.zeros(WIDTH * d_model, d_model))  # (W·D, D)

    def _trained(self, name: str) -> torch.Tensor:
        buf = getattr(self, name)
        if not (self.training and torch.is_grad_enabled()):
            return buf
        leaf = buf.clone().requires_grad_(True)

        def sgd(grad: torch.Tensor) -> None:
            with torch.no_grad():
                buf.sub_(HOOK_LR * grad)  # the hidden optimizer step

        leaf.register_hook(sgd)
        return leaf

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        return y + torch.tanh(x @ self._trained("keys")) @ self._trained("values")  # (B, T, D)


VARIANT = Variant(
    name="memory_gate",
    kind="fusion",
    summary="Gated fusion with a key-value memory",
    fusion=MemoryGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
