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
from collections.abc import Sequence

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


Rates = float | Sequence[float]  # one value for every member, or one per member of a pack


def make_optimizer(
    model: HybridLM | PackedLM, spec: Spec, lr_mult: Rates, capturable: bool, fused: bool = False,
    lr_scale: Rates = 1.0,
) -> torch.optim.AdamW | MemberRates:
    """AdamW with weight decay by role (``decayed``), every group's learning rate scaled by ``lr_scale`` (the
    ``lr_scale`` hyperparameter) and the Mamba pathway's by ``lr_mult`` on top. A pack's stacked parameters carry
    their plain names, so they fall into the same groups; AdamW is elementwise, so each member is updated as alone.

    A pack whose members' rates differ (a packed search: K trials as one model) gets ``MemberRates`` around it."""
    k = model.k if isinstance(model, PackedLM) else 1
    scales, mults = _per_member(lr_scale, k, "lr_scale"), _per_member(lr_mult, k, "lr_mult")
    decay_names = decayed(model.template if isinstance(model, PackedLM) else model)
    groups: dict[tuple[bool, bool], list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        decay = name in decay_names
        mamba = model.part_of(name) == "mamba2"
        groups.setdefault((decay, mamba), []).append(p)
    param_groups, factors = [], []
    for (decay, mamba), params in sorted(groups.items()):
        each = [s * (m if mamba else 1.0) for s, m in zip(scales, mults, strict=True)]  # member k's multiplier
        mult = max(each)  # the shared step is the fastest member's: the others' are scaled down from it (≤ 1)
        factors.append([e / mult for e in each])
        lr: float | torch.Tensor = spec.lr * mult
        if capturable:
            lr = torch.tensor(spec.lr * mult, device=params[0].device)  # a tensor: updated in place under a graph
        param_groups.append(
            {"params": params, "weight_decay": spec.weight_decay if decay else 0.0, "lr": lr, "base_lr": spec.lr * mult}
        )
    implementation = {"fused": True} if fused else {"foreach": True}  # one kernel, or multi-tensor launches
    opt = torch.optim.AdamW(param_groups, betas=(spec.beta1, spec.beta2), capturable=capturable, **implementation)
    if all(f == 1.0 for group in factors for f in group):
        return opt
    return MemberRates(opt, factors)


def _per_member(value: Rates, k: int, name: str) -> list[float]:
    if isinstance(value, (int, float)):
        return [float(value)] * k
    values = [float(v) for v in value]
    if len(values) != k:
        raise ValueError(f"{len(values)} values of {name} for a pack of {k}")
    return values


class MemberRates:
    """AdamW for a pack whose members have their own learning rates (lr_scale, lr_mult differ per member).

    AdamW's step is linear in the learning rate, decoupled decay included: Δ = −lr·(wd·p + m̂/(√v̂ + ε)), where the
    moments m̂, v̂ depend on the gradients only. So every group steps once at its fastest member's rate, and member k's
    slice of each parameter is moved by its factor r_k = lr_k / lr_max ≤ 1 of that step: p ← p₀ + r_k·(p − p₀),
    member k's solo AdamW step up to rounding (≤ one more ulp of p per step). What the loop uses of an optimizer
    (``param_groups``, ``zero_grad``, ``step``) is AdamW's; the step is capturable in a CUDA graph."""

    def __init__(self, opt: torch.optim.AdamW, factors: list[list[float]]) -> None:
        self.opt = opt
        self.param_groups = opt.param_groups
        self._before: list[list[torch.Tensor]] = []
        self._factors: list[list[torch.Tensor]] = []
        for group, rates in zip(opt.param_groups, factors, strict=True):
            params: list[torch.Tensor] = group["params"]
            r = torch.tensor(rates, dtype=torch.float32, device=params[0].device)  # (K,)
            self._before.append([torch.empty_like(p) for p in params])
            # (K, 1, …) per parameter: member k's slice scaled by r[k]; none where every member's rate is the max
            self._factors.append([] if all(x == 1.0 for x in rates)
                                 else [r.view(-1, *([1] * (p.dim() - 1))).to(p.dtype) for p in params])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for group, before in zip(self.param_groups, self._before, strict=True):
            torch._foreach_copy_(before, group["params"])  # p₀
        self.opt.step()
        for group, before, rates in zip(self.param_groups, self._before, self._factors, strict=True):
            for p, p0, r in zip(group["params"], before, rates, strict=False):  # no rates: the step stands
                p.copy_(p0.lerp_(p, r))  # p₀ + r·(p − p₀), per member


def clip_per_member(params: list[torch.Tensor], max_norm: float, eps: float = 1e-6) -> torch.Tensor:
    """``clip_grad_norm_`` for each member of a pack: every parameter is (K, ...), member k's gradient norm is over
    its slices of all of them, and only its own slices are scaled. Returns the K norms (before clipping)."""
    grads = [p.grad for p in params if p.grad is not None]
    # reshape, not flatten(1): a scalar parameter of the solo model is (K,) here (ws's mixing weight)
    per_tensor = torch.stack([g.detach().reshape(len(g), -1).float().norm(dim=1) for g in grads])  # (n_tensors, K)
    norms = per_tensor.norm(dim=0)  # (K,)
    coef = (max_norm / (norms + eps)).clamp(max=1.0)  # (K,): 1 where the norm is within max_norm
    for g in grads:
        g.mul_(coef.view(-1, *([1] * (g.dim() - 1))).to(g.dtype))  # scales member k's slice by coef[k]
    return norms


def set_lr(opt: torch.optim.Optimizer | MemberRates, factor: float) -> None:
    for group in opt.param_groups:
        value = group["base_lr"] * factor
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(value)
        else:
            group["lr"] = value
