"""The protocol's loss, evaluation and training diagnostics. Variants cannot reach this module."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from arena.model.lm import HybridLM
from arena.model.pack import PackedLM

Batch = tuple[torch.Tensor, torch.Tensor]


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over targeted positions; logits (B, T, V), y (B, T) with -100 where no loss is taken."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100)


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each pack member's mean cross-entropy over its own targeted positions: logits (K, B, T, V), y (K, B, T) →
    (K,). Member k's value is ``loss_of(logits[k], y[k])``."""
    k = logits.shape[0]
    per_token = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100,
                                reduction="none").view(k, -1)  # (K, B·T); 0 where ignored
    counts = (y.reshape(k, -1) != -100).sum(1).clamp(min=1)  # (K,)
    return per_token.sum(1) / counts  # (K,)


def batch_stats(model: HybridLM | PackedLM, x: torch.Tensor, y: torch.Tensor, autocast: bool) -> torch.Tensor:
    """One batch's sums for every member, (K, 3) float64: Σ loss, targeted positions, correct argmaxes. x, y are
    (K, B, T) for a pack, (B, T) for a plain model (K = 1). The same ops whether run eagerly or captured in a CUDA
    graph (``runner.eval_graph``), so both give the same bits."""
    k = model.k if isinstance(model, PackedLM) else 1
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
        logits = model(x)  # (K, B, T, V) or (B, T, V)
    flat_y = y.reshape(k, -1)  # (K, B·T)
    flat_logits = logits.reshape(k, flat_y.shape[1], -1).float()  # (K, B·T, V)
    loss = F.cross_entropy(flat_logits.reshape(-1, flat_logits.shape[-1]), flat_y.reshape(-1),
                           ignore_index=-100, reduction="none").view(k, -1)  # (K, B·T); 0 where ignored
    mask = flat_y != -100  # (K, B·T)
    correct = (flat_logits.argmax(-1) == flat_y) & mask  # (K, B·T)
    return torch.stack([loss.double().sum(1), mask.sum(1).double(), correct.sum(1).double()], dim=1)  # (K, 3)


def means(sums: torch.Tensor) -> list[tuple[float, float | None]]:
    """(mean loss, accuracy) per member from summed ``batch_stats`` (K, 3): one host sync."""
    return [(t / max(n, 1.0), c / max(n, 1.0)) for t, n, c in sums.tolist()]


@torch.no_grad()
def evaluate(model: HybridLM, batches: list[Batch], device: torch.device, autocast: bool) -> tuple[float, float | None]:
    """Mean loss over every target token of the fixed val batches, and accuracy on targeted positions (mqar)."""
    model.eval()
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in batches:
        x, y = x.to(device), y.to(device)  # (B, T) each
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(x)  # (B, T, V)
        flat_y = y.reshape(-1)  # (B·T,)
        flat_logits = logits.reshape(-1, logits.size(-1)).float()  # (B·T, V)
        loss_sum = F.cross_entropy(flat_logits, flat_y, ignore_index=-100, reduction="sum")
        mask = flat_y != -100
        total += loss_sum.double()
        count += mask.sum()
        correct += ((logits.reshape(-1, logits.size(-1)).argmax(-1) == flat_y) & mask).sum()
    model.train()
    n = float(count)
    return float(total) / max(n, 1.0), float(correct) / max(n, 1.0)


def grad_norms(model: HybridLM) -> dict[str, float]:
    """The gradient's L2 norm per part (rwkv6, mamba2, fusion, ...), from the last backward; one host sync."""
    squares: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            squares.setdefault(model.part_of(name), []).append(p.grad.detach().float().pow(2).sum())
    if not squares:
        return {}
    sums = torch.stack([torch.stack(t).sum() for t in squares.values()]).tolist()  # (parts,)
    return {part: math.sqrt(v) for part, v in zip(squares, sums, strict=True)}


def snapshot(model: HybridLM | PackedLM) -> dict[str, torch.Tensor]:
    """A copy of every parameter, on its device: θ₀ for ``movement`` (a second copy of the weights)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def movement(model: HybridLM, initial: dict[str, torch.Tensor]) -> dict[str, dict[str, float | None]]:
    """How far each parameter group moved since ``initial``: ``rel`` = ‖θ − θ₀‖ / ‖θ₀‖ over the group's elements
    (None when θ₀ is all zero: there is no size to be relative to) and ``rms`` = ‖θ − θ₀‖ / √n, the typical change
    of one element. Groups: the whole model (``all``), each part (rwkv6, mamba2, fusion, ffn, embed, norm, ...)
    and each parameter within a part, every layer pooled (``HybridLM.group_of``: ``fusion/gate.bias``)."""
    terms: dict[str, list[torch.Tensor]] = {}  # group -> per tensor [Σ (θ − θ₀)², Σ θ₀²]
    count: dict[str, int] = {}
    for name, p in model.named_parameters():
        start = initial[name].float()
        pair = torch.stack([(p.detach().float() - start).pow(2).sum(), start.pow(2).sum()])  # (2,)
        for group in ("all", model.part_of(name), model.group_of(name)):
            terms.setdefault(group, []).append(pair)
            count[group] = count.get(group, 0) + p.numel()
    sums = torch.stack([torch.stack(t).sum(0) for t in terms.values()]).cpu().tolist()  # (groups, 2): one sync
    out: dict[str, dict[str, float | None]] = {}
    for group, (moved2, size2) in zip(terms, sums, strict=True):
        out[group] = {"rel": math.sqrt(moved2 / size2) if size2 > 0 else None, "rms": math.sqrt(moved2 / count[group])}
    return out


def diagnostics(model: HybridLM, step: int, probe: list[Batch], device: torch.device, autocast: bool,
                initial: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """On one val batch: gate statistics, pathway output norms and each pathway's amplitude in the fused output
    (per layer; ``arena.model.attribution``); the last step's gradient norms per part; with ``initial`` (θ₀,
    ``snapshot``) how far each parameter group has moved (``movement``)."""
    norms = grad_norms(model)
    model.set_record(True)
    evaluate(model, probe, device, autocast)  # records gates, pathway norms and amplitudes
    model.set_record(False)
    diag: dict[str, Any] = {
        "step": step,
        "gates": model.gate_stats(),
        "amplitude": model.amplitude_stats(),
        "pathway_norms": model.pathway_norms(),
        "grad_norms": norms,
    }
    if initial is not None:
        diag["moved"] = movement(model, initial)
    if "rwkv6" in norms and norms.get("mamba2"):
        diag["grad_ratio"] = norms["rwkv6"] / norms["mamba2"]
    return diag
