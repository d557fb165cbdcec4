"""The protocol's loss, evaluation and training diagnostics. Variants cannot reach this module."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from arena.model.lm import HybridLM

Batch = tuple[torch.Tensor, torch.Tensor]


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over targeted positions; logits (B, T, V), y (B, T) with -100 where no loss is taken."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=-100)


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
    """The gradient's L2 norm per part (rwkv6, mamba2, fusion, ...), from the last backward."""
    sq: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            part = model.part_of(name)
            sq[part] = sq.get(part, 0.0) + float(p.grad.detach().float().pow(2).sum())
    return {k: math.sqrt(v) for k, v in sq.items()}


def diagnostics(model: HybridLM, step: int, probe: list[Batch], device: torch.device, autocast: bool) -> dict[str, Any]:
    """Gate statistics and pathway output norms on one val batch, and the last step's gradient norms per part."""
    norms = grad_norms(model)
    model.set_record(True)
    evaluate(model, probe, device, autocast)  # records gates and pathway norms
    model.set_record(False)
    diag: dict[str, Any] = {
        "step": step,
        "gates": model.gate_stats(),
        "pathway_norms": model.pathway_norms(),
        "grad_norms": norms,
    }
    if "rwkv6" in norms and norms.get("mamba2"):
        diag["grad_ratio"] = norms["rwkv6"] / norms["mamba2"]
    return diag
