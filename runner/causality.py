"""Causality checks the variant cannot tell apart from training and evaluation.

* ``gradient_leak`` — on a forward that really trains (or really evaluates), the gradient of the logits at positions
  ≤ t0 with respect to the token embeddings at positions > t0 must be exactly zero. It runs on the spec's real batch
  shape, in the mode of the call, with autograd on, through the call path of training; ``t0`` and the steps it runs
  at come from the operating system's entropy, never from the seed. It sees every differentiable leak.
* ``perturbation_leak`` — one forward of a batch whose second half repeats the first half's rows up to ``t0`` and
  continues them with other tokens: the logits at positions ≤ t0 of each pair must agree. It sees leaks the gradient
  cannot (a path that severs autograd: comparisons, argmax, integer ops).

Both return the size of the leak (0 for a causal model) and the first leaking position.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch

from arena.model.lm import HybridLM

_ENTROPY = random.SystemRandom()  # os.urandom: nothing in the process can predict it
PERTURBATION_TOL = 1e-4  # relative to the logits' scale: rows of one batch may round differently in a GEMM
GRADIENT_TOL = 1e-6  # relative: exactly 0 on the CPU; room for a GPU kernel's rounding (moves no loss)


@dataclass(frozen=True)
class Leak:
    """A causality finding: ``size`` relative to the causal part's scale (0 = causal) and where it first shows."""

    size: float
    t0: int
    position: int | None  # the first later position that influences positions ≤ t0 (gradient), or None

    @property
    def leaks(self) -> bool:
        return self.size > 0

    def describe(self) -> str:
        where = f"position {self.position}" if self.position is not None else f"positions after {self.t0}"
        return f"not causal: logits at positions ≤ {self.t0} depend on {where} (relative size {self.size:.2e})"


def random_t0(seq_len: int) -> int:
    """A cut point in [0, seq_len − 2], from the OS's entropy."""
    return _ENTROPY.randrange(0, max(1, seq_len - 1))


def random_steps(steps: int, k: int) -> set[int]:
    """``k`` distinct training steps (from the OS's entropy) at which the gradient check runs."""
    return set(_ENTROPY.sample(range(steps), min(k, steps)))


def gradient_leak(embeddings: torch.Tensor, logits: torch.Tensor, t0: int) -> Leak:
    """The leak seen by the gradient of ``logits[..., :t0+1, :]`` (B, T, V) w.r.t. ``embeddings[..., t0+1:, :]``
    (B, T, D) of the same forward; a pack's tensors carry a leading K (every member is checked at once, each only
    through its own forward). Keeps the graph, so the step's own backward can follow."""
    weights = torch.randn(logits[..., : t0 + 1, :].shape, device=logits.device, dtype=torch.float32,
                          generator=torch.Generator(device=logits.device).manual_seed(_ENTROPY.getrandbits(62)))
    (grad,) = torch.autograd.grad((logits[..., : t0 + 1, :].float() * weights).sum(), embeddings, retain_graph=True)
    grad = grad.reshape(-1, *grad.shape[-2:])  # (B, T, D); a pack's members as more rows
    later = grad[:, t0 + 1 :].detach().abs()  # (B, T − t0 − 1, D)
    earlier = grad[:, : t0 + 1].detach().abs()
    if not (bool(torch.isfinite(logits).all()) and bool(torch.isfinite(earlier).all())):
        return Leak(0.0, t0, None)  # a diverged forward says nothing about causality; the loss checks end the run
    scale = float(earlier.max()) or 1.0
    if not bool(torch.isfinite(later).all()):
        return Leak(float("inf"), t0, t0 + 1 + int((~torch.isfinite(later)).any(0).any(-1).nonzero()[0]))
    size = float(later.max()) / scale if later.numel() else 0.0
    if size <= GRADIENT_TOL:
        return Leak(0.0, t0, None)
    first = int((later.amax(dim=(0, 2)) > GRADIENT_TOL * scale).nonzero()[0])
    return Leak(size, t0, t0 + 1 + first)


def paired_batch(x: torch.Tensor, other: torch.Tensor, t0: int) -> torch.Tensor:
    """Rows of ``x`` (B, T), then the same rows continued after ``t0`` with ``other``'s tokens: (2·⌊B/2⌋, T)."""
    half = x.shape[0] // 2
    a = x[:half]
    b = a.clone()
    b[:, t0 + 1 :] = other[:half, t0 + 1 :]
    return torch.cat([a, b], dim=0)


def perturbation_leak(model: HybridLM, x: torch.Tensor, other: torch.Tensor, t0: int) -> Leak:
    """One forward of ``paired_batch``; how far apart the pairs' logits at positions ≤ t0 are, relative to their
    scale. The caller chooses the mode (train/eval) and autograd; this reads no gradient."""
    batch = paired_batch(x, other, t0)
    half = batch.shape[0] // 2
    logits = model(batch).float()  # (2·half, T, V)
    a, b = logits[:half, : t0 + 1], logits[half:, : t0 + 1]
    scale = float(a.detach().abs().max()) or 1.0
    size = float((a - b).detach().abs().max()) / scale
    if math.isnan(size):  # one side is not finite
        return Leak(float("inf"), t0, None)
    return Leak(size if size > PERTURBATION_TOL else 0.0, t0, None)
