"""How arena starts the processes that run variant code: forked from a server that has imported torch and the
runner once (Python's ``forkserver``), so a fresh process per variant costs a fork, not a two-second import.

The server imports arena's and torch's modules and nothing else — no variant code ever runs in it — so every child
starts clean. A child inherits the server's environment and folder, not the caller's: ``start`` hands the caller's
current environment and working folder to the child, which ``enter`` applies first.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing as mp
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from multiprocessing.context import ForkServerContext
from pathlib import Path
from typing import Any

from arena.core.errors import ArenaError
from arena.core.liveness import process_start, still_running

INTERRUPTED_EXIT = 130  # what a worker exits with when it is interrupted


class Interrupted(KeyboardInterrupt):
    """A run stopped by the user (Ctrl-C, SIGTERM, SIGHUP): never a result, never stored."""


class MachineryFailure(ArenaError):
    """arena's own machinery failed during a run (a checkpoint a full disk cannot hold, the process server gone):
    the run is no result and must not be stored; the caller leaves it for the next command (or retries)."""


class MachineLost(MachineryFailure):
    """The process or node that held a group's work is gone (a Ray slot's actor died and no other could take its
    place): nothing of the group is stored, and it is to be trained again by another slot of the same command."""


def server_lost(proc: Any) -> bool:
    """Whether a child only looks dead because the process server died: multiprocessing then reads every child of
    that server as exited with 255, running or not (2026-12-02, H200: a signal that ended the server turned two
    clean checks still computing into 'rejected' results). The server reaps the children that really exit, so a
    child whose process is still there was not one of them; it is ended here (``proc.kill`` no longer reaches it:
    multiprocessing believes it gone)."""
    if proc.exitcode != 255:
        return False
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def interrupted(code: int | None) -> bool:
    """Whether a child's exit code says it was interrupted rather than that it failed."""
    return code == INTERRUPTED_EXIT or code in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGHUP)


PRELOAD = ["torch", "arena.runner.train", "arena.runner.check", "arena.runner.verify", "arena.runner.inspection"]
_configured = False
_server_started = False


def context() -> ForkServerContext:
    """The forkserver context, its server preloading torch and the runner (set up once per process)."""
    global _configured
    ctx = mp.get_context("forkserver")
    assert isinstance(ctx, ForkServerContext)
    if not _configured:
        ctx.set_forkserver_preload(PRELOAD)
        _configured = True
    return ctx


def start(target: Callable[..., Any], args: tuple[Any, ...], *, daemon: bool = True) -> Any:
    """Start ``target(*args)`` in a fresh child that first takes on this process's environment and folder."""
    global _server_started
    ctx = context()
    proc = ctx.Process(target=_enter_then, args=(dict(os.environ), os.getcwd(), _self(), target, args),
                       daemon=daemon)
    if _server_started:
        proc.start()
        return proc
    # The server starts with the caller's folder as its own and, unless Python ran with -P, that folder first on its
    # path: started from a source checkout, it would import the folder arena/ (which lacks arena.runner: only an
    # install maps runner/ there) instead of the installed package. So it starts from an empty folder.
    # The folder stays: the first child also starts in it (multiprocessing records the folder at start()).
    neutral = Path(tempfile.gettempdir()) / f"arena-forkserver-{os.getuid()}"
    neutral.mkdir(mode=0o700, exist_ok=True)
    here = os.getcwd()
    os.chdir(neutral)
    # The server and multiprocessing's resource tracker start now, by exec: they inherit this thread's signal mask
    # but not the stack printer, and SIGUSR1's default ends a process. Blocked, a `kill -USR1` of the whole process
    # group (bench/gpu_tournament.py asks every process for its stacks) leaves them running; each child unblocks it
    # (``_enter_then``). The mask is per thread: this works from any thread, unlike a signal handler.
    usr1 = {signal.SIGUSR1} if hasattr(signal, "SIGUSR1") else set()
    if usr1:
        signal.pthread_sigmask(signal.SIG_BLOCK, usr1)
    try:
        proc.start()
    finally:
        os.chdir(here)
        if usr1:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, usr1)
    _server_started = True
    return proc


def _self() -> tuple[int, str | None]:
    """This process as its children know it: pid and start time (a pid alone may be reused)."""
    return os.getpid(), process_start(os.getpid())


def pipe() -> tuple[Any, Any]:
    return context().Pipe()


_stacks_file: list[Any] = []  # the open file faulthandler writes into (it keeps only the descriptor)


def stacks_on_sigusr1(label: str = "") -> None:
    """``kill -USR1 <pid>`` prints every thread's stack of this process (a hang, diagnosed where it happens: the
    driver and every child arena starts call this) to its stderr, or, where ``ARENA_STACKS_DIR`` names a folder, to
    a file of its own there: the processes of one command share a stderr, and their dumps, written at once by a
    group-wide signal, came out interleaved character by character (2026-12-03)."""
    if not hasattr(signal, "SIGUSR1"):
        return
    # The process's own stderr (the real file descriptor: under a test runner sys.stderr may be a buffer), unless
    # its own file opens (a folder that cannot be written falls back to stderr).
    err: Any = sys.__stderr__
    folder = os.environ.get("ARENA_STACKS_DIR")
    if folder:
        with contextlib.suppress(OSError):
            err = open(Path(folder) / f"stacks-{os.getpid()}.txt", "w", encoding="utf-8")  # noqa: SIM115 (kept open)
            err.write(f"# pid {os.getpid()} (parent {os.getppid()}): {label or ' '.join(sys.argv)}\n")
            err.flush()
            _stacks_file[:] = [err]
    if err is None:
        return
    with contextlib.suppress(AttributeError, ValueError, OSError):
        faulthandler.register(signal.SIGUSR1, file=err, all_threads=True)


def _enter_then(env: dict[str, str], cwd: str, driver: tuple[int, str | None], target: Callable[..., Any],
                args: tuple[Any, ...]) -> None:
    if hasattr(signal, "SIGUSR1"):  # blocked in the server (``start``): a child prints its stacks again
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
    os.environ.clear()
    os.environ.update(env)
    stacks_on_sigusr1(getattr(target, "__qualname__", repr(target)))
    sys.path[:] = [p for p in sys.path if p and os.path.isabs(p)]  # no entry may follow the folder we move into
    with contextlib.suppress(OSError):  # the caller's folder is gone: the child works from the server's
        os.chdir(cwd)
    try:
        target(*args)
    except (BrokenPipeError, ConnectionResetError):
        # The process that started this child was killed (SIGKILL, a call's time limit): nobody is left to report
        # to, so the child ends quietly instead of printing a traceback into the log of a command that is over.
        # While that process lives, a broken pipe is a failure like any other.
        if still_running(*driver):
            raise
        os._exit(INTERRUPTED_EXIT)
