"""Training batches to the device without stalling it.

``x.to("cuda", non_blocking=True)`` from ordinary (pageable) host memory is not asynchronous: the driver stages
the bytes and may wait for the stream, so the host cannot queue step k+1 while the GPU still runs step k, and the
GPU idles for the host's per-step work (batch indexing, learning-rate fills, graph launch). A small ring of
pinned host buffers makes the copy truly asynchronous; a CUDA event per slot keeps the host from overwriting a
slot whose copy has not run yet (which also bounds how far the host runs ahead).

The batches are the same tensors either way: this changes when bytes move, never which bytes.
"""

from __future__ import annotations

import torch

from arena.runner.data import Batch, Track

__all__ = ["BatchFeeder"]


class BatchFeeder:
    """``feeder(step) -> (x, y)`` on ``device``: ``track.train_batch(seed, step)``, copied through pinned slots."""

    def __init__(self, track: Track, seed: int, device: torch.device, pinned: bool = True, slots: int = 3) -> None:
        self.track, self.seed, self.device = track, seed, device
        self.pinned = pinned and device.type == "cuda"
        self._slots: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        self._events: list[torch.cuda.Event | None] = []
        self._n_slots = slots
        self._next = 0

    def __call__(self, step: int) -> Batch:
        x, y = self.track.train_batch(self.seed, step)  # (B, T) each, on the CPU
        if self.device.type != "cuda":
            return x.to(self.device), y.to(self.device)
        if not self.pinned:
            return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        i = self._next
        self._next = (i + 1) % self._n_slots
        if i == len(self._slots):
            self._slots.append(None)
            self._events.append(None)
        event = self._events[i]
        if event is not None:
            event.synchronize()  # this slot's previous copy has been read by the GPU
        slot = self._slots[i]
        if slot is None or slot[0].shape != x.shape or slot[1].shape != y.shape:  # first use, or a new batch shape
            slot = self._slots[i] = (torch.empty_like(x).pin_memory(), torch.empty_like(y).pin_memory())
        hx, hy = slot
        hx.copy_(x)
        hy.copy_(y)
        dx = hx.to(self.device, non_blocking=True)  # (B, T)
        dy = hy.to(self.device, non_blocking=True)  # (B, T)
        recorded = torch.cuda.Event()
        recorded.record()
        self._events[i] = recorded
        return dx, dy
