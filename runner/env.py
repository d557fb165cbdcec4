"""The software and hardware a run used, recorded with every result (and compared by the champion registry)."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from arena.model.backend import deterministic

# What the kernel packages read from the environment (arena.model.backend.kernel_env sets their defaults).
KERNEL_ENV = ("TRITON_CACHE_AUTOTUNING", "MAMBA_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG", "ARENA_DETERMINISTIC")
PACKAGES = ("torch", "triton", "flash-linear-attention", "fla-core", "mamba-ssm", "causal-conv1d", "numpy", "arena")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def git_commit() -> str | None:
    """The arena checkout's commit (None when installed from a wheel or git is absent)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "threads": torch.get_num_threads(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "git_commit": git_commit(),
        "deterministic": deterministic() if device.type == "cuda" else True,
        "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if k in os.environ} if device.type == "cuda" else {},
    }
    return env
