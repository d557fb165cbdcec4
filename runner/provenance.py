"""What a run is computed with, besides its inputs: the digest of arena's code and the stack (``Basis``).

``code_digest`` hashes the source of every module that decides what a run computes: the model core and its kernels'
wrappers, the variant API and the stock fusions, the spec and hyperparameter rules, the data pipeline, the training
loop, its optimizer and evaluation, and the checks that accept or reject a run. Editing any of them changes every key,
so the next tournament recomputes instead of reusing results the old code produced. (The orchestration, the store
and the CLI are not in it: they decide which runs happen, not what a run computes.)

``basis_for(options)`` is computed by the driver before it plans, and again by the worker that trains (from its own
imported code and its own device): a worker whose basis differs from the one it was sent refuses the task, so a key
always names the code and stack that really computed it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from typing import Any

import torch

from arena.core.options import RunOptions
from arena.core.stack import Basis

# The modules whose source is a run's code. A new module that changes what a run computes belongs here
# (tests/test_provenance.py checks that every module of these packages is listed).
CODE_MODULES: tuple[str, ...] = (
    "arena.core.spec", "arena.core.hparams", "arena.core.variant", "arena.core.fusions", "arena.core.result",
    "arena.model.lm", "arena.model.rwkv6", "arena.model.wkv", "arena.model.mamba2", "arena.model.ssd",
    "arena.model.attention", "arena.model.backend", "arena.model.fold", "arena.model.pack",
    "arena.runner.tracks", "arena.runner.corpus", "arena.runner.mqar", "arena.runner.data", "arena.runner.feed",
    "arena.runner.train", "arena.runner.loop", "arena.runner.optim", "arena.runner.evaluate", "arena.runner.check",
    "arena.runner.causality", "arena.runner.verify", "arena.runner.eval_graph",
)


@functools.cache
def code_digest() -> str:
    """sha256 (24 hex) over the source of ``CODE_MODULES``, as installed; read from disk, nothing is imported."""
    h = hashlib.sha256()
    for name in CODE_MODULES:
        found = importlib.util.find_spec(name)
        if found is None or found.origin is None:
            raise RuntimeError(f"arena module {name} is missing from this installation")
        with open(found.origin, "rb") as f:
            h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()[:24]


def resolved_device(options: RunOptions) -> str:
    """'cpu' or 'cuda' for these options, without initialising CUDA (``is_available`` asks the driver only)."""
    if options.device.startswith("cuda"):
        return "cuda"
    if options.device == "cpu":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def visible_gpus() -> int:
    """How many CUDA devices this process sees (``CUDA_VISIBLE_DEVICES`` applies); asks the driver, makes no
    context, holds no GPU memory."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def free_gpu_memory_mb(index: int = 0) -> float | None:
    """Free memory of GPU ``index`` in MiB, from NVML through ``nvidia-smi`` (the driver's count; no CUDA context
    here, so none of it held by this process); None where it cannot be asked."""
    import subprocess

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    physical = visible[index].strip() if index < len(visible) and visible[index].strip() else str(index)
    try:
        query = ["nvidia-smi", f"--id={physical}", "--query-gpu=memory.free", "--format=csv,noheader,nounits"]
        out = subprocess.run(query, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
        return float(out.splitlines()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def local_stack(options: RunOptions) -> dict[str, Any]:
    """The stack a run with these options gets in THIS process (on CUDA it initialises the device: call it in a
    worker). Device, GPU model, torch and CUDA, determinism, requested backend and which kernels import, mode and
    execution options."""
    from arena.model.backend import deterministic, kernel_status

    device = resolved_device(options)
    backend = options.backend if options.backend != "auto" else os.environ.get("ARENA_BACKEND", "auto")
    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "backend": backend}
    if device == "cuda":
        index = int(options.device.split(":")[1]) if ":" in options.device else 0
        info |= {
            "gpu": torch.cuda.get_device_name(index), "cuda": torch.version.cuda, "deterministic": deterministic(),
            "kernels": {k: v == "ok" for k, v in kernel_status().items()},
            "mode": "eager" if options.mode == "eager" else "graph",
            "execution": {"pinned_batches": options.execution.pinned_batches,
                          "fused_adamw": options.execution.fused_adamw},
        }
    else:
        info["mode"] = "eager"
    if options.execution.pack > 1:  # a plain run's stack is what it was before packing existed
        info["pack"] = options.execution.pack
    return info


@functools.cache
def local_basis(options: RunOptions) -> Basis:
    """This process's basis for ``options``, computed once (the worker and ``train`` both ask for it per run)."""
    return Basis.of(code_digest(), local_stack(options))


_PROBED: dict[tuple[RunOptions, tuple[tuple[str, str], ...]], Basis] = {}


def basis_for(options: RunOptions, env: dict[str, str] | None = None) -> Basis:
    """The basis a worker with ``env`` (e.g. its CUDA_VISIBLE_DEVICES) will compute with. On the CPU it is computed
    here; on CUDA a short-lived worker process reports it, so this process never holds GPU memory. Cached."""
    key = (options, tuple(sorted((env or {}).items())))
    if key not in _PROBED:
        if resolved_device(options) == "cpu":
            _PROBED[key] = local_basis(options)
        else:
            from arena.runner import processes

            parent, child = processes.pipe()
            proc = processes.start(_probe, (child, options, dict(env or {})))
            child.close()
            try:
                kind, payload = parent.recv()
            finally:
                proc.join(timeout=30)
            if kind != "ok":
                from arena.core.errors import ArenaError

                raise ArenaError(f"--device {options.device}: {payload}")
            _PROBED[key] = Basis.of(payload[0], payload[1])
    return _PROBED[key]


def _probe(conn: Any, options: RunOptions, env: dict[str, str]) -> None:
    os.environ.update(env)
    try:
        conn.send(("ok", (code_digest(), local_stack(options))))
    except Exception as exc:  # no such GPU, a broken driver: one line for the user
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    conn.close()
