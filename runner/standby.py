"""Processes started ahead of need: a child that does the variant-free part of a GPU process's start while the
current group trains, then waits to be told what to run.

A worker or a clean-check process on a GPU spends ≈ 15–20 s before it can compute (the kernel packages' imports,
their environment, a CUDA context; issue #15 measured 17.7–19.1 s of worker start-up and 36 s for the clean check
of a pack on an H200), while the GPU trains another group. A standby does that part early. It has run no variant
code when it is handed its target: its state is what any fresh process of arena's would have after the same
imports, so the isolation of one process per variant and the clean check's fresh process are unchanged.

``Standby.hand(target, args)`` starts ``target(conn, *args)`` in the standby, over the pipe it was made with, as
``processes.start(target, (conn, *args))`` would in a fresh child; None when the standby died meanwhile (the
caller then starts a fresh child as before).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from typing import Any

from arena.runner import processes


class Standby:
    """A started child waiting for its target (see the module's docstring)."""

    def __init__(self, warm: Callable[[], None] | None) -> None:
        self.conn, child = processes.pipe()
        self.proc = processes.start(_standby_main, (child, warm))
        child.close()

    def hand(self, target: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, Any] | None:
        """Start ``target(conn, *args)`` in this standby: its (process, parent end of the pipe), or None."""
        if not self.proc.is_alive():
            self.kill()
            return None
        try:
            self.conn.send((target, args))
        except (BrokenPipeError, OSError):
            self.kill()
            return None
        return self.proc, self.conn

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        with contextlib.suppress(OSError):
            self.conn.close()


def _standby_main(conn: Any, warm: Callable[[], None] | None) -> None:
    if warm is not None:
        with contextlib.suppress(Exception):  # the target sets up again and reports its own failures
            warm()
    try:
        msg = conn.recv()
    except (EOFError, OSError, KeyboardInterrupt):
        return
    if msg is None:
        return
    target, args = msg
    target(conn, *args)


def gpu_warm(env: dict[str, str] | None = None) -> Callable[[], None]:
    """The warm-up of a GPU child with ``env`` applied first (e.g. the one GPU its slot sees)."""
    return functools.partial(_warm_gpu, dict(env or {}))


def _warm_gpu(env: dict[str, str]) -> None:
    """The kernels' environment and imports and a CUDA context: what every GPU child of arena's does first (in
    ``runner.worker`` and ``runner.verify``), none of it variant code."""
    os.environ.update(env)
    import torch

    # torch.optim imports torch._dynamo the first time an optimizer is made: 2.5 s of a 4.3 s model build on a
    # CPU (measured 2026-12-02), paid by every group's fresh worker unless its standby has paid it already.
    import torch._dynamo

    from arena.model import backend

    backend.prepare_cuda()
    backend.fla_chunk_rwkv6()
    backend.mamba_chunk_scan_combined()
    # First uses that a handed-over worker's model build paid (≈ 4 s of build against 0.5 s in a worker that had
    # built before, H200 2026-12-02): the CUDA context, cuBLAS's handle (after prepare_cuda pinned its workspace),
    # torch.func's vmap (every pack's forward) and a fused AdamW step.
    x = torch.ones(2, 4, 4, device="cuda", requires_grad=True)
    y = torch.func.vmap(lambda m: m @ m)(x).sum()  # (2, 4, 4) → ()
    y.backward()
    opt = torch.optim.AdamW([x], fused=True)
    opt.step()
    torch.cuda.synchronize()


# Standbys started before a command knows what it will run (``start_ahead``): the first group's worker would
# otherwise pay its 14 s of start-up after the command's entry check (H200, 2026-12-02: startup_s 13.8 s for the
# first pack of a warm tournament, 0.2 s for the later ones), so the entry check and that start-up overlap instead.
_AHEAD: dict[tuple[tuple[str, str], ...], Standby] = {}


def _key(env: dict[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((env or {}).items()))


def start_ahead(env: dict[str, str] | None = None) -> None:
    """Start a GPU standby for a worker with ``env`` now, unless one is already waiting (``take_ahead``)."""
    if _key(env) not in _AHEAD:
        _AHEAD[_key(env)] = Standby(gpu_warm(env))


def take_ahead(env: dict[str, str] | None = None) -> Standby | None:
    """The standby ``start_ahead`` started for ``env``, once; None when there is none."""
    return _AHEAD.pop(_key(env), None)


def end_ahead() -> None:
    """End every standby started ahead that no worker took (a command that had nothing to train)."""
    while _AHEAD:
        _AHEAD.popitem()[1].kill()
