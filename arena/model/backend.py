"""Backend choice for the sequence operators (WKV and SSD) only; everything else is plain torch.

``auto`` uses the GPU kernels when the tensors are on CUDA and the kernel packages import, and the chunked
pure-torch reference otherwise. ``ARENA_BACKEND`` (or an explicit argument) overrides it. No CPU code path
imports FLA or mamba-ssm: the imports happen lazily, here, only for CUDA tensors or when asked.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from typing import Any

import torch

from arena.core.errors import ArenaError
from arena.core.options import BACKENDS


def deterministic() -> bool:
    """Whether GPU runs use only deterministic kernels (``ARENA_DETERMINISTIC``, default 1).

    Why it is the default: mamba-ssm's SSD backward and causal-conv1d's weight gradient accumulate with atomic
    adds, whose order varies from run to run, and chaotic training grows those last-bit differences: one seed run
    twice on an H100 ended 7e-4 apart in val loss after 500 steps (bench/results). Deterministic mode makes
    mamba-ssm reduce its tiles in a fixed order (its ``MAMBA_DETERMINISTIC``), uses cuDNN's deterministic depthwise
    conv instead of causal-conv1d, pins cuBLAS's workspace and forbids cuDNN autotuning.
    ``ARENA_DETERMINISTIC=0`` trades that for a little speed.
    """
    value = os.environ.get("ARENA_DETERMINISTIC", "1").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no", "on", "off", ""):
        raise ArenaError(f"ARENA_DETERMINISTIC={value!r}: use 1 (deterministic GPU kernels, default) or 0")
    return value in ("1", "true", "yes", "on", "")


@functools.cache
def _try_import(module: str, attr: str) -> Any:
    """The attribute, or the import error's text (str) when it does not import."""
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as exc:  # ImportError, OSError (ABI mismatch), RuntimeError (no driver) ...
        return f"{type(exc).__name__}: {exc}"


def kernel_env() -> None:
    """Environment the kernel packages read when first imported; set (unless the user set it) just before that.

    * ``TRITON_CACHE_AUTOTUNING=1``: every run is a fresh child process; without a persistent autotune cache each
      would re-autotune FLA's and mamba-ssm's Triton kernels (minutes) and could pick other configs by timing
      noise, and other configs sum in other orders. With it, the first process on a machine tunes and saves, and
      every later one loads the same configs (in ``TRITON_CACHE_DIR``) in seconds.
    * deterministic mode: ``MAMBA_DETERMINISTIC=1`` (read when mamba-ssm's modules are imported; the kernels
      whose results Triton cannot cache are pinned, see ``pin_uncacheable_autotuners``) and cuBLAS's
      fixed workspace ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (read when its handle is made, so before the first
      matmul: ``prepare_cuda`` calls this before the model moves to the GPU).
    """
    os.environ.setdefault("TRITON_CACHE_AUTOTUNING", "1")
    if deterministic():
        os.environ.setdefault("MAMBA_DETERMINISTIC", "1")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def prepare_cuda() -> None:
    """Set the kernel environment and cuDNN's flags before a GPU run builds its model."""
    kernel_env()
    # cuDNN's depthwise-conv weight gradient has nondeterministic algorithms; benchmark mode picks per run.
    torch.backends.cudnn.deterministic = deterministic()
    torch.backends.cudnn.benchmark = False


MAMBA_SSD = "mamba_ssm.ops.triton.ssd_combined"
KERNEL_PACKAGES = ("fla", "mamba_ssm")


@functools.cache
def _kernel(module: str, attr: str, deterministic_mode: bool) -> Any:
    """Import a kernel once per mode, after setting the environment its package reads at import time.

    The getters below run on every forward of a CUDA layer; the environment work happens here, once.
    """
    kernel_env()
    found = _try_import(module, attr)
    if deterministic_mode:
        pin_uncacheable_autotuners()
    return found


def _autotuner(obj: Any, autotuner_cls: type) -> Any:
    """The Triton Autotuner behind a module attribute (through @triton.heuristics wrappers), or None."""
    for _ in range(4):
        if isinstance(obj, autotuner_cls):
            return obj
        obj = getattr(obj, "fn", None)
        if obj is None:
            return None
    return None


def config_cost(cfg: Any) -> int:
    """A Triton config's cost by mamba-ssm's rule for its deterministic mode: block sizes × pipeline stages (the
    least shared memory). Block sizes are the integer kwargs whose names start with B: mamba-ssm's BLOCK_SIZE_*,
    FLA's BT, BK, BV, BS."""
    blocks = 1
    for key, value in cfg.kwargs.items():
        if key.startswith("B") and isinstance(value, int):
            blocks *= value
    return blocks * (cfg.num_stages or 1)


def pin_uncacheable_autotuners(packages: tuple[str, ...] = KERNEL_PACKAGES) -> list[str]:
    """Pin every loaded kernel whose autotune results Triton cannot cache to one config; return their names.

    Triton caches autotune results on disk (``TRITON_CACHE_AUTOTUNING=1``), so every process on a machine loads
    the configs the first one chose — except for kernels whose configs carry pre-hooks ("can't serialize
    prehooks"): those are timed again in every process, and timing noise picks configs that sum in another
    order. mamba-ssm's backward kernels are such (_chunk_scan_chunk_state_bwd_dx, _chunk_state_bwd_db,
    _chunk_cumsum_bwd, ...). bench/cross_process.py showed it on an H100: two fresh processes agreed on every
    forward output and differed in the gradients, and exactly those three kernels' autotuners had chosen
    different block sizes (bench/results). Pinned here to the cheapest config by mamba-ssm's own deterministic
    rule, they run the same in every process, while every cacheable kernel keeps its tuned config.
    (Importing mamba-ssm without the knob would pin all of its kernels instead, but ``import fla`` imports
    mamba-ssm first, with the knob on, so the import environment cannot be relied on.)
    """
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:  # no Triton, so no Triton kernels either
        return []
    pinned = []
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in packages:
            continue
        for attr, obj in list(vars(module).items()):
            tuner = _autotuner(obj, Autotuner)
            if tuner is None or len(tuner.configs) < 2 or not any(c.pre_hook for c in tuner.configs):
                continue
            tuner.configs = [min(tuner.configs, key=config_cost)]
            pinned.append(f"{name}.{attr}")
    return pinned


def fla_chunk_rwkv6() -> Any:
    return _kernel("fla.ops.rwkv6", "chunk_rwkv6", deterministic())


def mamba_chunk_scan_combined() -> Any:
    return _kernel(MAMBA_SSD, "mamba_chunk_scan_combined", deterministic())


def causal_conv1d_fn() -> Any:
    """causal-conv1d's kernel, or why not: its weight gradient uses atomic adds, so deterministic mode skips it."""
    if deterministic():
        return "skipped: causal-conv1d's backward is not deterministic (ARENA_DETERMINISTIC=0 enables it)"
    return _kernel("causal_conv1d", "causal_conv1d_fn", False)


def kernel_status() -> dict[str, str]:
    """Which kernels import ('ok' or the error), for ``arena doctor``. Imports them: call on GPU hosts only."""
    found = {
        "fla.chunk_rwkv6": fla_chunk_rwkv6(),
        "mamba_ssm.mamba_chunk_scan_combined": mamba_chunk_scan_combined(),
        "causal_conv1d.causal_conv1d_fn": _try_import("causal_conv1d", "causal_conv1d_fn"),
    }
    return {k: ("ok" if not isinstance(v, str) else v) for k, v in found.items()}


def requested() -> str:
    """The backend asked for by ARENA_BACKEND (default auto)."""
    value = os.environ.get("ARENA_BACKEND", "auto")
    if value not in BACKENDS:
        raise ArenaError(f"ARENA_BACKEND={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def resolve(backend: str, x: torch.Tensor, kernel: Any) -> str:
    """The backend to use for this call: 'kernel', 'torch_chunk' or 'torch_recurrent'.

    ``kernel`` is the loaded kernel function or the import error's text. 'auto' picks the kernel only for CUDA
    tensors whose kernel imports; asking for 'kernel' explicitly when it cannot run is an error.
    """
    if backend == "auto":
        backend = requested()
    if backend == "auto":
        return "kernel" if x.is_cuda and not isinstance(kernel, str) else "torch_chunk"
    if backend == "kernel":
        if not x.is_cuda:
            raise ArenaError("backend 'kernel' needs CUDA tensors; use --backend auto or torch_chunk on a CPU")
        if isinstance(kernel, str):
            raise ArenaError(f"backend 'kernel' asked for, but the kernel does not import ({kernel})")
    if backend not in BACKENDS:
        raise ArenaError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    return backend
