"""Bitwise repeatability of one training step's gradients: which parameters come out different between identical calls.

Used by the GPU bench and the GPU tests to find nondeterministic kernels (on a CPU every gradient repeats exactly).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def differing_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor, times: int = 3) -> tuple[list[str], float]:
    """Run forward+backward ``times`` times on (x, y) (B, T); the parameters whose gradient ever differs from the
    first call's bits (sorted), and the largest absolute difference seen."""
    grads = []
    for _ in range(times):
        model.zero_grad(set_to_none=True)
        logits = model(x)  # (B, T, V)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()
        grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
    first = grads[0]
    differ = sorted({n for g in grads[1:] for n in g if not torch.equal(g[n], first[n])})
    worst = max((float((g[n] - first[n]).abs().max()) for g in grads[1:] for n in differ), default=0.0)
    return differ, worst
