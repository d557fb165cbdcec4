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
import warnings
from typing import Any

import torch

from arena.errors import ArenaError

BACKENDS = ("auto", "kernel", "torch_chunk", "torch_recurrent")


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
    * deterministic mode: ``MAMBA_DETERMINISTIC=1`` (read when mamba-ssm's modules are imported; see
      ``_import_mamba_untuned`` for why mamba-ssm's kernels are kept out of the autotune cache) and cuBLAS's
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


@functools.cache
def _kernel(module: str, attr: str, deterministic_mode: bool) -> Any:
    """Import a kernel once per mode, after setting the environment its package reads at import time.

    The getters below run on every forward of a CUDA layer; the environment work happens here, once.
    """
    kernel_env()
    if deterministic_mode:
        _import_mamba_untuned()  # before anything else: importing FLA imports mamba-ssm too (fla.layers.mamba2)
    return _try_import(module, attr)


@functools.cache
def _import_mamba_untuned() -> None:
    """Import mamba-ssm's SSD kernels without the autotune-cache knob, so its deterministic mode pins their configs.

    Triton does not cache autotune results of kernels whose configs carry pre-hooks, and mamba-ssm's backward
    kernels do (_chunk_scan_chunk_state_bwd_dx, _chunk_state_bwd_db, _chunk_cumsum_bwd, ...): with the knob on,
    every process tunes them again by timing and may pick configs that sum in another order. bench/cross_process.py
    showed exactly that on an H100: two fresh processes agreed on every forward output and differed in the
    gradients, with those three kernels' autotuners choosing different block sizes (bench/results). Imported
    without the knob, mamba-ssm's deterministic mode gives every kernel its cheapest config instead: no tuning,
    the same in every process. The knob is read when the kernels are decorated, so unsetting it around this import
    leaves FLA's (cacheable) autotuning as it is; and it must come first, because ``import fla`` imports
    mamba-ssm's SSD module (with the knob on) when mamba-ssm is installed.
    """
    if MAMBA_SSD in sys.modules:
        warnings.warn(
            "mamba-ssm was imported before arena set up its deterministic mode (for example by importing fla "
            "first); its backward kernels are then tuned in every process and runs may differ across processes. "
            "Import arena's model code first, or set ARENA_DETERMINISTIC=0 to accept it.",
            stacklevel=3,
        )
        return
    saved = os.environ.pop("TRITON_CACHE_AUTOTUNING", None)
    try:
        with warnings.catch_warnings():  # its advice to set the knob is what this deliberately does not do
            warnings.filterwarnings("ignore", message="Deterministic mode: set TRITON_CACHE_AUTOTUNING")
            _try_import(MAMBA_SSD, "mamba_chunk_scan_combined")
    finally:
        if saved is not None:
            os.environ["TRITON_CACHE_AUTOTUNING"] = saved


def fla_chunk_rwkv6() -> Any:
    return _kernel("fla.ops.rwkv6", "chunk_rwkv6", deterministic())


def fla_fused_recurrent_rwkv6() -> Any:
    return _kernel("fla.ops.rwkv6", "fused_recurrent_rwkv6", deterministic())


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
