"""The protocol's loss, evaluation and training diagnostics. Variants cannot reach this module."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def _members(model: HybridLM | PackedLM) -> tuple[int, list[tuple[str, torch.Tensor, torch.Tensor | None]]]:
    """(K, every parameter and its gradient with a leading K): a pack's stacked tensors, a plain model's
    unsqueezed (K = 1)."""
    if isinstance(model, PackedLM):
        return model.k, [(n, p.detach(), p.grad) for n, p in model.named_parameters()]
    return 1, [(n, p.detach().unsqueeze(0), None if p.grad is None else p.grad.unsqueeze(0))
               for n, p in model.named_parameters()]


def _pooled(groups: list[list[str]], rows: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Per-tensor values ``rows`` (tensors, K, ...) summed into the groups each tensor belongs to (``groups[i]``
    for tensor i), as one matrix product: (labels, (labels, K, ...))."""
    labels = list(dict.fromkeys(g for gs in groups for g in gs))
    member = torch.tensor([[1.0 if g in gs else 0.0 for gs in groups] for g in labels], dtype=rows.dtype)
    return labels, torch.tensordot(member.to(rows.device), rows, dims=1)  # (labels, tensors) · (tensors, K, ...)


def _squares(tensors: Sequence[torch.Tensor], k: int) -> torch.Tensor:
    """Σ x² of each member's slice of each tensor, (tensors, K): one foreach norm over the K·tensors slices (a
    handful of kernels, where a loop over tensors and members launched thousands)."""
    norms = torch._foreach_norm([t[i].float() for t in tensors for i in range(k)])
    return torch.stack(norms).view(len(tensors), k).double().pow(2)  # (tensors, K)


@torch.no_grad()
def grad_norms(model: HybridLM | PackedLM) -> list[dict[str, float]]:
    """Per member (one for a plain model): the gradient's L2 norm per part (rwkv6, mamba2, fusion, ...), from the
    last backward; one host sync for every member."""
    k, named = _members(model)
    with_grad = [(n, g) for n, _, g in named if g is not None]
    if not with_grad:
        return [{} for _ in range(k)]
    parts, sums = _pooled([[model.part_of(n)] for n, _ in with_grad], _squares([g for _, g in with_grad], k))
    table = sums.tolist()  # (parts, K)
    return [{part: math.sqrt(table[i][m]) for i, part in enumerate(parts)} for m in range(k)]


def snapshot(model: HybridLM | PackedLM) -> dict[str, torch.Tensor]:
    """A copy of every parameter, on its device: θ₀ for ``movement`` (a second copy of the weights)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@torch.no_grad()
def movement(model: HybridLM | PackedLM, initial: dict[str, torch.Tensor]) -> list[dict[str, dict[str, float | None]]]:
    """Per member: how far each parameter group moved since ``initial`` (``snapshot`` of the same model): ``rel`` =
    ‖θ − θ₀‖ / ‖θ₀‖ over the group's elements (None when θ₀ is all zero: there is no size to be relative to) and
    ``rms`` = ‖θ − θ₀‖ / √n, the typical change of one element. Groups: the whole model (``all``), each part
    (rwkv6, mamba2, fusion, ffn, embed, norm, ...) and each parameter within a part, every layer pooled
    (``HybridLM.group_of``: ``fusion/gate.bias``). One host sync for every member."""
    k, named = _members(model)
    template = model.template if isinstance(model, PackedLM) else model
    names = [n for n, _, _ in named]
    start = [initial[n] if isinstance(model, PackedLM) else initial[n].unsqueeze(0) for n in names]
    moved = torch._foreach_sub([p for _, p, _ in named], start)
    pairs = torch.stack([_squares(moved, k), _squares(start, k)], dim=-1)  # (tensors, K, 2)
    groups = [["all", template.part_of(n), template.group_of(n)] for n in names]
    labels, sums = _pooled(groups, pairs)  # (groups, K, 2)
    count: dict[str, int] = {}
    for gs, (_, p, _) in zip(groups, named, strict=True):
        for g in gs:
            count[g] = count.get(g, 0) + p[0].numel()
    table = sums.tolist()  # (groups, K, 2): Σ (θ − θ₀)², Σ θ₀²
    out: list[dict[str, dict[str, float | None]]] = []
    for m in range(k):
        moved_m: dict[str, dict[str, float | None]] = {}
        for g, row in zip(labels, table, strict=True):
            moved2, size2 = row[m]
            moved_m[g] = {"rel": math.sqrt(moved2 / size2) if size2 > 0 else None, "rms": math.sqrt(moved2 / count[g])}
        out.append(moved_m)
    return out


def diagnostics(model: HybridLM, step: int, probe: list[Batch], device: torch.device, autocast: bool,
                initial: dict[str, torch.Tensor] | None = None, *, norms: dict[str, float] | None = None,
                moved: dict[str, dict[str, float | None]] | None = None) -> dict[str, Any]:
    """On one val batch: gate statistics, pathway output norms and each pathway's amplitude in the fused output
    (per layer; ``arena.model.attribution``); the last step's gradient norms per part; with ``initial`` (θ₀,
    ``snapshot``) how far each parameter group has moved (``movement``). A pack passes its member's ``norms`` and
    ``moved``, computed for every member at once, and loads only the member's weights into ``model``."""
    if norms is None:
        norms = grad_norms(model)[0]
    if moved is None and initial is not None:
        moved = movement(model, initial)[0]
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
    if moved is not None:
        diag["moved"] = moved
    if "rwkv6" in norms and norms.get("mamba2"):
        diag["grad_ratio"] = norms["rwkv6"] / norms["mamba2"]
    return diag
