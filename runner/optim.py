"""The protocol's optimizer and schedule: AdamW with weight decay by role, the Mamba pathway's lr_mult group,
linear warm-up then cosine (or constant). Variants cannot reach this module.

Weight decay is chosen by what a parameter does, not by its rank (a rank rule decayed RWKV's bonus u and its
token-shift mixes, which are matrices, and spared their one-dimensional siblings). Decayed: the weight matrix of
every linear map — the ``.weight`` of an ``nn.Linear`` (FFN; RWKV's receptance, key, value, gate and output
projections; Mamba's in/out projections; attention's qkv and output; a fusion's Linear layers) and the
input/hidden matrices of a recurrent layer (``nn.GRU``/``nn.LSTM``/``nn.RNN``, e.g. gru_arbiter's GRU).
Not decayed: everything else — the embedding (tied to the head), norms' gains and biases, every bias, a fusion's
gains and scalars (hy's gains, ws's s, rf's corr), Mamba's ``A_log``, ``D``, ``dt_bias`` and its depthwise causal
conv (a per-channel filter along time, the role RWKV's token shift plays), and every RWKV time-mix parameter:
the token-shift mixes ``x_bias`` and ``x_proj.0.mu``, the mix LoRA ``x_proj.*`` (RWKV-LM's ``time_maa_w1/w2``),
the decay LoRA and its base ``w_proj.*`` (``time_decay_w1/w2``, ``time_decay``) and the bonus ``u``. This is
RWKV-LM's rule (it decays only ``.weight`` matrices, none of its time-mix parameters) and mamba-ssm's
(``A_log``, ``D``, ``dt_bias`` carry ``_no_weight_decay``).
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn

from arena.core.spec import Spec
from arena.model.lm import HybridLM
from arena.model.pack import PackedLM


def lr_at(spec: Spec, step: int) -> float:
    """Learning-rate factor at a step: linear warm-up, then cosine to min_lr_ratio (or constant)."""
    if spec.warmup_steps and step < spec.warmup_steps:
        return (step + 1) / spec.warmup_steps
    if spec.lr_schedule == "constant":
        return 1.0
    span = max(1, spec.steps - spec.warmup_steps)
    progress = min(1.0, (step - spec.warmup_steps) / span)
    return spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# RWKV-6's time-mix LoRAs are nn.Linear layers in FLA's layout, but RWKV-LM's time_maa_w1/w2, time_decay_w1/w2:
# not decayed (see the module doc).
RWKV_TIME_MIX = re.compile(r"blocks\.\d+\.mixers\.rwkv6\.(?:x_proj|w_proj)\.")


def decayed(model: nn.Module) -> set[str]:
    """The names of the parameters that get weight decay: the weight matrices of linear maps (module doc)."""
    names: set[str] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.Linear):
            names.add(f"{prefix}weight")
        elif isinstance(module, nn.RNNBase):
            names |= {f"{prefix}{n}" for n, _ in module.named_parameters(recurse=False) if n.startswith("weight_")}
    return {n for n in names if not RWKV_TIME_MIX.match(n)}


def make_optimizer(
    model: HybridLM | PackedLM, spec: Spec, lr_mult: float, capturable: bool, fused: bool = False,
    lr_scale: float = 1.0,
) -> torch.optim.AdamW:
    """AdamW with weight decay by role (``decayed``), every group's learning rate scaled by ``lr_scale`` (the
    ``lr_scale`` hyperparameter) and the Mamba pathway's by ``lr_mult`` on top. A pack's stacked parameters carry
    their plain names, so they fall into the same groups; AdamW is elementwise, so each member is updated as alone."""
    decay_names = decayed(model.template if isinstance(model, PackedLM) else model)
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        decay = name in decay_names
        mamba = model.part_of(name) == "mamba2"
        groups.setdefault((decay, mamba), []).append(p)
    param_groups = []
    for (decay, mamba), params in sorted(groups.items()):
        mult = lr_scale * (lr_mult if mamba else 1.0)
        lr: float | torch.Tensor = spec.lr * mult
        if capturable:
            lr = torch.tensor(spec.lr * mult, device=params[0].device)  # a tensor: updated in place under a graph
        param_groups.append(
            {"params": params, "weight_decay": spec.weight_decay if decay else 0.0, "lr": lr, "base_lr": spec.lr * mult}
        )
    implementation = {"fused": True} if fused else {"foreach": True}  # one kernel, or multi-tensor launches
    return torch.optim.AdamW(param_groups, betas=(spec.beta1, spec.beta2), capturable=capturable, **implementation)


def clip_per_member(params: list[torch.Tensor], max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    """``clip_grad_norm_`` for each member of a pack: every parameter is (K, ...), member k's gradient norm is over
    its slices of all of them, and only its own slices are scaled. Returns the K norms (before clipping)."""
    grads = [p.grad for p in params if p.grad is not None]
    per_tensor = torch.stack([g.detach().flatten(1).float().norm(dim=1) for g in grads])  # (n_tensors, K)
    norms = per_tensor.norm(dim=0)  # (K,)
    coef = (max_norm / (norms + eps)).clamp(max=1.0)  # (K,): 1 where the norm is within max_norm
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))  # scales member k's slice by coef[k]
    return norms


def set_lr(opt: torch.optim.Optimizer, factor: float) -> None:
    for group in opt.param_groups:
        value = group["base_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
