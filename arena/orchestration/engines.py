"""Engines: where groups of trials train. ``local`` (today's worker processes on this machine) or ``ray`` (Ray
actors on any node of a cluster, one per slot: ``arena.orchestration.ray_engine``, imported only when asked for).

The contract both keep:

* ``open_engine(options)`` is a context manager yielding the engine of ``options.engine``; nested calls (a champion
  contest inside a tournament) share the engine already open, so one command starts (or joins) Ray once, and the
  local engine's worker processes (with the standby each started ahead) serve every execution of the command.
* ``engine.slots`` is how many groups may train at once; ``engine.slot(i, n)`` (a context manager, slot ``i`` of the
  ``n`` in use) yields a ``Runner``. ``runner(fn, args, on_event)`` returns ``fn(worker, *args, events)``, computed
  with a runner ``Worker`` of its own (an isolated child process, so crashes, timeouts and divergence stay
  results): here, or inside a slot's Ray actor. For Ray, ``fn`` is a module-level function and ``args`` plain data
  (both pickle); ``events`` is ``on_event`` here, and in an actor a stand-in that calls ``on_event`` in this process
  (an ``eval`` event waits for its answer: that is how a search prunes). Events from Ray carry ``node`` and ``gpu``.
  When ``fn`` returns a call to make later (a group's clean check), the runner returns one that makes it where the
  group trained; a runner whose machine was lost raises ``MachineLost`` (the group trains again in another slot).
* ``fn`` only computes: this process records what it returns, so it stays the one writer of the store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.runner.standby import end_ahead
from arena.runner.worker import Worker

T = TypeVar("T")
EventFn = Callable[..., Any]
INSTALL_RAY = 'pip install "arena[ray]"'
_LOCAL: list[LocalEngine] = []  # the local engines open in this process (nested calls with the same options share)
_LOCAL_LOCK = threading.Lock()


class Runner(Protocol):
    def __call__(self, fn: Callable[..., T], args: tuple[Any, ...], on_event: EventFn | None) -> T: ...


class Engine(Protocol):
    name: str
    slots: int

    def slot(self, index: int, in_use: int, ahead: bool = True) -> contextlib.AbstractContextManager[Runner]: ...

    def start_ahead(self) -> None: ...

    def label(self) -> str: ...


@contextlib.contextmanager
def local_slot(threads: int | None = None, env: dict[str, str] | None = None,
               standby: bool | None = None) -> Iterator[Runner]:
    """A Runner over one Worker process of this machine (reused for the slot's groups, one child per variant; on a
    GPU the next variant's child starts ahead unless ``standby`` is False: ``runner.worker.Worker``)."""
    with Worker(threads=threads, env=env, standby=standby) as worker:
        yield worker.compute


class LocalEngine:
    """``options.workers`` slots, each one Worker process here; the CPU threads are split among the slots in use
    and the GPUs of ``options.gpus`` dealt round-robin (several slots may share one).

    Opened by ``open_engine``, it keeps each slot's Worker (its child and the standby started ahead) from one
    execution to the next until it closes: a tournament's champion decision, its own execution, starts in the
    processes the tournament left running (2026-12-02, H200: 19 s of start-up for the decision's first pack in a
    fresh worker, 0.2 s in a standby)."""

    name = "local"

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.slots = max(1, options.workers)
        self._idle: dict[tuple[int, tuple[tuple[str, str], ...]], Worker] = {}  # kept between executions
        self._lock = threading.Lock()

    def slot_env(self, index: int) -> dict[str, str]:
        """The environment of slot ``index``'s worker: the one GPU it sees (round-robin over ``options.gpus``)."""
        gpus = self.options.gpus
        return {"CUDA_VISIBLE_DEVICES": str(gpus[index % len(gpus)])} if gpus else {}

    @contextlib.contextmanager
    def slot(self, index: int, in_use: int, ahead: bool = True) -> Iterator[Runner]:
        """Slot ``index`` of ``in_use``; ``ahead`` False when it will run one variant only (no standby is
        worth starting for a next one). The slot's Worker is the one an earlier execution left with the same
        threads and GPU, else a new one; it goes back to the engine afterwards (a failure of arena's ends it)."""
        threads, env = max(1, (os.cpu_count() or 1) // max(1, in_use)), self.slot_env(index)
        key = (threads, tuple(sorted(env.items())))
        with self._lock:
            worker = self._idle.pop(key, None)
        if worker is None:
            worker = Worker(threads=threads, env=env)
        worker.standby = None if ahead else False  # a standby kept from an earlier execution is used either way
        try:
            yield worker.compute
        except BaseException:
            worker.close()
            raise
        with self._lock:
            spare = self._idle.pop(key, None)
            self._idle[key] = worker
        if spare is not None:  # two slots of one key (slots sharing a GPU): keep one, end the other
            spare.close()

    def close(self) -> None:
        with self._lock:
            workers, self._idle = list(self._idle.values()), {}
        for worker in workers:
            worker.close()

    def start_ahead(self) -> None:
        """On a GPU: each slot's first worker process starts now (``start_ahead``)."""
        start_ahead(self.options)

    def label(self) -> str:
        return f"{self.slots} worker(s)"


def start_ahead(options: RunOptions) -> None:
    """On a GPU with the local engine: start each slot's first worker process now, before the command's entry
    check, so that its ≈ 14 s of start-up (kernel imports, CUDA context) overlap the check instead of following it.
    The first Worker with that slot's environment takes it (``runner.standby.take_ahead``); the local engine's end
    (or the CLI's) ends one that none took. The Ray engine's ``start_ahead`` places its actors ahead instead."""
    from arena.runner.provenance import resolved_device
    from arena.runner.standby import start_ahead as start

    if options.engine == "ray" or resolved_device(options) != "cuda":
        return
    engine = LocalEngine(options)
    for index in range(engine.slots):
        start(engine.slot_env(index))


def check_engine(options: RunOptions) -> None:
    """Refuse, in one line and before anything is written, ``--engine ray`` where Ray is not installed and a
    ``--ray-address host:port`` where nothing answers (Ray itself would retry for minutes)."""
    if options.engine != "ray":
        return
    if importlib.util.find_spec("ray") is None:
        raise ArenaError(f"--engine ray needs Ray, which is not installed: {INSTALL_RAY}")
    address = options.ray_address or ""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # none (a local instance), "auto", ray://…: Ray's own resolution
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ArenaError(f"--ray-address {address}: nothing answers there ({exc.strerror or exc}); start the head "
                         "with `ray start --head --port PORT`, or leave --ray-address out for a local instance"
                         ) from None


@contextlib.contextmanager
def open_engine(options: RunOptions) -> Iterator[Engine]:
    """The engine ``options`` ask for (see the module docstring); a Ray instance this opens is stopped at the end,
    the worker processes a local engine kept are ended."""
    if options.engine != "ray":
        with _local_session(options) as local:
            yield local
        return
    check_engine(options)
    from arena.orchestration import ray_engine

    with ray_engine.session(options) as engine:
        yield engine


@contextlib.contextmanager
def _local_session(options: RunOptions) -> Iterator[LocalEngine]:
    """The local engine already open with these options (a contest inside a tournament: its workers), else a new
    one, closed at the end."""
    with _LOCAL_LOCK:  # the per-run limit travels with each run, not with the workers (a CLI fits it later)
        active = next((e for e in reversed(_LOCAL) if _same_workers(e.options, options)), None)
    if active is not None:
        yield active
        return
    engine = LocalEngine(options)
    with _LOCAL_LOCK:
        _LOCAL.append(engine)
    try:
        yield engine
    finally:
        with _LOCAL_LOCK:
            _LOCAL.remove(engine)
        engine.close()
        if not _LOCAL:
            end_ahead()  # started ahead for a worker that never came (nothing to train)


def _same_workers(a: RunOptions, b: RunOptions) -> bool:
    """Whether one engine's workers serve both option sets: they differ at most in the per-run time limit."""
    return dataclasses.replace(a, timeout_s=b.timeout_s) == b
