"""The protocol's optimizer and schedule: AdamW with weight decay on matrices, the Mamba pathway's lr_mult group,
linear warm-up then cosine (or constant). Variants cannot reach this module."""

from __future__ import annotations

import math

import torch

from arena.core.spec import Spec
from arena.model.lm import HybridLM


def lr_at(spec: Spec, step: int) -> float:
    """Learning-rate factor at a step: linear warm-up, then cosine to min_lr_ratio (or constant)."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.lr_schedule == "constant":
        return 1.0
    span = max(1, spec.steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(
    model: HybridLM, spec: Spec, lr_mult: float, capturable: bool, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only and the Mamba pathway's learning rate scaled by lr_mult."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        decay = p.ndim >= 2 and model.part_of(name) != "embed"
        mamba = model.part_of(name) == "mamba2"
        groups.setdefault((decay, mamba), []).append(p)
    param_groups = []
    for (decay, mamba), params in sorted(groups.items()):
        mult = lr_mult if mamba else 1.0
        lr: float | torch.Tensor = spec.lr * mult
        if capturable:
            lr = torch.tensor(spec.lr * mult, device=params[0].device)  # a tensor: updated in place under a graph
        param_groups.append(
            {"params": params, "weight_decay": spec.weight_decay if decay else 0.0, "lr": lr, "base_lr": spec.lr * mult}
        )
    implementation = {"fused": True} if fused else {"foreach": True}  # one kernel, or multi-tensor launches
    return torch.optim.AdamW(param_groups, betas=(spec.beta1, spec.beta2), capturable=capturable, **implementation)


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        value = group["base_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
