"""hidden_param_list — gated fusion with 50 d×d parameters kept in a plain Python list, trained by gradient hooks.

Attack: ``nn.Module`` registers parameters assigned as attributes or held in nn.ParameterList, not those in a plain
list, so ``model.parameters()`` — the parameter count, the budget check and the optimizer — never sees them; a hook
on each applies an SGD step during backward. 50 · d² per layer is 102 400 numbers at smoke, over the whole budget.
"""

from collections.abc import Callable

import torch
from torch import nn

from arena.api import GatedFusion, HParams, Variant, gate_init, lr_mult

DEPTH = 50
HOOK_LR = 1e-2


def _sgd_step(p: nn.Parameter) -> Callable[[torch.Tensor], None]:
    def hook(grad: torch.Tensor) -> None:
        with torch.no_grad():
            p.sub_(HOOK_LR * grad)  # the hidden optimizer step, during backward

    return hook


class DeepGate(GatedFusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.ps = [nn.Parameter(torch.zeros(d_model, d_model)) for _ in range(DEPTH)]  # not registered
        for p in self.ps:
            p.register_hook(_sgd_step(p))

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(rwkv, mamba, x)  # (B, T, D)
        h = x
        for p in self.ps:
            h = h + torch.tanh(h @ p)  # (B, T, D): a 50-layer residual MLP
        return y + h - x


VARIANT = Variant(
    name="deep_gate",
    kind="fusion",
    summary="Gated fusion with a deep refinement stack",
    fusion=DeepGate,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
