"""Helpers the bench scripts share (bench/ is scripts, not a package: each script puts this folder on sys.path)."""

from __future__ import annotations

import os
from typing import Any


def bench_device() -> str:
    """cuda, or BENCH_DEVICE=cpu for a smoke check of this script (graph runs then run eager)."""
    return os.environ.get("BENCH_DEVICE", "cuda")


def run(spec: Any, name: str, seed: int, mode: str, data: str, backend: str = "auto", ckpt: str | None = None,
        execution: Any = None) -> Any:
    from arena.core.options import Execution, RunOptions
    from arena.runner.loader import builtin
    from arena.runner.train import train

    device = bench_device()
    options = RunOptions(device=device, backend=backend, mode=mode if device == "cuda" else "eager", data_flag=data,
                         execution=execution or Execution(), timeout_s=None)
    return train(spec, builtin(name), seed, options=options, checkpoint_path=ckpt)


def gf_and_first_batch(spec: Any, data: str) -> tuple[Any, Any, Any]:
    """gf at the spec's dims (seed 0) and the seed-0 step-0 training batch, on the bench device (CUDA prepared)."""
    from arena.model.backend import prepare_cuda
    from arena.model.lm import build_model
    from arena.runner.data import load_track
    from arena.runner.loader import builtin

    dev = bench_device()
    if dev == "cuda":
        prepare_cuda()
    model = build_model(spec.dims, builtin("gf").variant, seed=0).to(dev)
    x, y = (t.to(dev) for t in load_track(spec, data).train_batch(0, 0))  # (B, T) each
    return model, x, y
