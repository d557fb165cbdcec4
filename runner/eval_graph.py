"""Evaluation replayed from CUDA graphs: the val batches of a run, every member at once, each batch shape captured once.

An eager evaluation of a pack launches every kernel of the vmapped forward from Python: ≈ 150 ms a batch at phase2,
more than the training steps between two eval points. The forward of a fixed-shape batch is the same kernels every
time, so the first batch of each shape runs eagerly (it tunes and loads the kernels; a capture must not autotune)
and is then captured; every later batch of that shape is copied into the graph's static input and replayed. The
captured ops are ``evaluate.batch_stats``'s, so a replay gives the bits an eager evaluation gives.

Each graph is captured on a stream of its own (pytorch/pytorch#193402: graphs that share a capture stream free each
other's cuBLAS workspaces; ``runner.loop.Run.capture`` does the same for the training step).
"""

from __future__ import annotations

import torch

from arena.model.lm import HybridLM
from arena.model.pack import PackedLM
from arena.runner.evaluate import Batch, batch_stats, means


class _Captured:
    """One batch shape's graph: static inputs, the (K, 3) sums it writes, the stream that owns it."""

    def __init__(self, model: HybridLM | PackedLM, x: torch.Tensor, y: torch.Tensor, autocast: bool) -> None:
        self.x, self.y = x.clone(), y.clone()
        self.stream = torch.cuda.Stream(x.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.out = batch_stats(model, self.x, self.y, autocast)  # (K, 3)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.out


class Evaluator:
    """Every member's (mean loss, accuracy) over its val batches; replayed from graphs when ``graphs`` is on (a CUDA
    run in graph mode), eager otherwise. The batches go to the device once, stacked per member for a pack."""

    def __init__(self, model: HybridLM | PackedLM, device: torch.device, autocast: bool, graphs: bool) -> None:
        self.model, self.device, self.autocast = model, device, autocast
        self.graphs = graphs and device.type == "cuda"
        self.k = model.k if isinstance(model, PackedLM) else 1
        self.captured: dict[tuple[int, ...], _Captured] = {}
        self.staged: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def stage(self, name: str, batches: list[list[Batch]]) -> None:
        """Keep ``batches`` (per member, the same count each) on the device under ``name``."""
        staged = []
        for pairs in zip(*batches, strict=True):
            if self.k == 1:
                x, y = pairs[0]  # (B, T) each
            else:
                x = torch.stack([bx for bx, _ in pairs])  # (K, B, T)
                y = torch.stack([by for _, by in pairs])  # (K, B, T)
            staged.append((x.to(self.device), y.to(self.device)))
        self.staged[name] = staged

    @torch.no_grad()
    def __call__(self, name: str) -> list[tuple[float, float | None]]:
        self.model.eval()
        sums = torch.zeros(self.k, 3, device=self.device, dtype=torch.float64)
        try:
            for x, y in self.staged[name]:
                sums += self._one(x, y)
        finally:
            self.model.train()
        return means(sums)

    def _one(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.graphs:
            return batch_stats(self.model, x, y, self.autocast)
        shape = tuple(x.shape)
        if shape in self.captured:
            return self.captured[shape](x, y)
        out = batch_stats(self.model, x, y, self.autocast)  # eager first: kernels tuned and loaded before capture
        torch.cuda.synchronize(self.device)
        try:
            self.captured[shape] = _Captured(self.model, x, y, self.autocast)
        except RuntimeError:  # a forward that cannot be captured in eval mode (a host sync there): evaluate eagerly
            torch.cuda.synchronize(self.device)
            self.graphs = False
        return out
