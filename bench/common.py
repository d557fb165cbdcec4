"""Helpers the bench scripts share (bench/ is scripts, not a package: each script puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def arena(args: list[str], log: Path, env: dict[str, str], timeout: float = 560) -> dict[str, Any]:
    """``arena ARGS`` in a session of its own, its output appended to ``log``. Cut at ``timeout`` (rc 124): every
    process of the command first dumps its threads' stacks (SIGUSR1) into a file of its own (``ARENA_STACKS_DIR``,
    then appended to the log: one stderr interleaved them), then the whole process group is killed, so no child
    (a worker, a standby, a clean check) outlives the command to hold the GPU for the next one."""
    t0 = time.monotonic()
    stacks = log.parent / "stacks"
    shutil.rmtree(stacks, ignore_errors=True)
    stacks.mkdir(parents=True)
    with log.open("a") as f:
        f.write(f"\n$ arena {' '.join(args)}   # {time.strftime('%H:%M:%S')}, limit {timeout:.0f} s\n")
        f.flush()
        proc = subprocess.Popen([sys.executable, "-P", "-m", "arena.cli", *args], stdout=f, stderr=subprocess.STDOUT,
                                env=dict(env, ARENA_STACKS_DIR=str(stacks)), start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            f.write("\n--- limit reached: the stacks of every process of the command ---\n")
            f.flush()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGUSR1)
            time.sleep(5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = 124
            for dump in sorted(stacks.glob("stacks-*.txt")):
                f.write("\n" + dump.read_text(errors="replace"))
    shutil.rmtree(stacks, ignore_errors=True)
    return {"args": args, "rc": rc, "seconds": round(time.monotonic() - t0, 1)}


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
