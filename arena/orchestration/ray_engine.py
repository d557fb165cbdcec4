"""The Ray engine (``--engine ray``): every group of trials is one Ray task, trained in a runner ``Worker`` process of
its own on whichever node Ray picks, so a crash, a timeout or a divergence stays a result exactly as locally.

* A task asks for one CPU and ``options.gpu_share`` GPUs (default: 1 on CUDA, 0 on the CPU). A task whose Ray worker
  process or node dies is run again elsewhere (``MAX_RETRIES``); what it returns is a list of plain results that
  the driver records, so the driver stays the only writer of the store (a SQLite store works across hosts).
* Events travel through one small actor on the driver's node (``_Channel``): a task sends them in batches, and an
  ``eval`` event waits for the driver's answer (a search prunes that way). Every event carries ``node``, ``gpu``
  and ``pid`` (of the Ray worker process).
* ``session(options)`` joins the cluster at ``options.ray_address`` or, without one, starts a local Ray instance,
  and stops what it started at the end. The driver's ``ARENA_*`` variables (data, home, limits) reach the tasks.

Only ``arena.orchestration.engines`` imports this module (Ray is an extra: ``pip install "arena[ray]"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ray
from ray.exceptions import RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.runner.provenance import resolved_device
from arena.runner.worker import MachineryFailure, Worker

T = TypeVar("T")
MAX_RETRIES = 3  # a group whose Ray worker or node died runs again, up to this many times
ASK_TIMEOUT_S = 120.0  # an eval event's answer that never comes counts as "go on"
FLUSH_S = 0.5  # step events are sent at most this often


@ray.remote(num_cpus=0)
class _Channel:
    """Events from the tasks to the driver (``take``), and the driver's answers to the questions (``answer``)."""

    def __init__(self) -> None:
        self._events: list[tuple[str, int | None, tuple[Any, ...]]] = []
        self._asks: dict[int, asyncio.Future[Any]] = {}
        self._n = 0

    async def put(self, tag: str, batch: list[tuple[Any, ...]]) -> None:
        self._events.extend((tag, None, args) for args in batch)

    async def ask(self, tag: str, args: tuple[Any, ...]) -> Any:
        self._n += 1
        n = self._n
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._asks[n] = future
        self._events.append((tag, n, args))
        try:
            return await asyncio.wait_for(future, ASK_TIMEOUT_S)
        except TimeoutError:
            return None
        finally:
            self._asks.pop(n, None)

    async def take(self) -> list[tuple[str, int | None, tuple[Any, ...]]]:
        out, self._events = self._events, []
        return out

    async def answer(self, n: int, value: Any) -> None:
        future = self._asks.get(n)
        if future is not None and not future.done():
            future.set_result(value)


def _where() -> dict[str, Any]:
    node = ray.get_runtime_context().get_node_id()
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    return {"node": f"{socket.gethostname()}/{node[:6]}", "gpu": gpus or None, "pid": os.getpid()}


class _Forwarder:
    """The task's stand-in for the driver's ``on_event``: events go out in batches, questions (eval events) wait."""

    def __init__(self, channel: Any, tag: str) -> None:
        self.channel, self.tag, self.where = channel, tag, _where()
        self.batch: list[tuple[Any, ...]] = []
        self.sent = 0.0

    def __call__(self, *args: Any) -> Any:
        args = tuple({**a, **self.where} if isinstance(a, dict) and "type" in a else a for a in args)
        if any(isinstance(a, dict) and a.get("type") == "eval" for a in args):
            self.flush()
            try:
                return ray.get(self.channel.ask.remote(self.tag, args), timeout=ASK_TIMEOUT_S + 10)
            except (RayError, TimeoutError):  # the driver is gone or busy: training goes on
                return None
        self.batch.append(args)
        if time.monotonic() - self.sent >= FLUSH_S or any(isinstance(a, dict) and a.get("type") == "phase"
                                                           for a in args):
            self.flush()
        return None

    def flush(self, wait: bool = False) -> None:
        """Send the batch; ``wait`` (the task's last flush) until the channel has it, so the driver sees every
        event of a task before its result."""
        if self.batch:
            with contextlib.suppress(RayError, TimeoutError):
                sent = self.channel.put.remote(self.tag, self.batch)
                if wait:
                    ray.get(sent, timeout=30)
            self.batch = []
        self.sent = time.monotonic()


@ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)
def _group_task(fn: Callable[..., Any], args: tuple[Any, ...], channel: Any, tag: str | None) -> Any:
    """One group, in this Ray worker: ``fn(worker, *args, events)`` with a runner Worker of its own."""
    threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    forward = _Forwarder(channel, tag) if tag is not None else None
    try:
        with Worker(threads=threads, standby=False) as worker:  # one group a task: no next variant
            return fn(worker, *args, forward)
    finally:
        if forward is not None:
            forward.flush(wait=True)


def _env() -> dict[str, str]:
    """What the tasks need of the driver's environment: its ``ARENA_*`` variables (never the store's URL)."""
    return {k: v for k, v in os.environ.items() if k.startswith("ARENA_") and k != "ARENA_DB"}


class RayEngine:
    """The Ray engine of one command (see the module docstring); ``slots`` is what the cluster runs at once
    (its GPUs / ``gpu_share``, or its CPUs), capped by ``--workers`` when that is more than 1."""

    name = "ray"

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.gpu_share = options.gpu_share if options.gpu_share is not None else (
            1.0 if resolved_device(options) == "cuda" else 0.0)
        self.slots = 1
        self._started = False
        self._handlers: dict[str, tuple[Callable[..., Any] | None, list[BaseException]]] = {}
        self._stop = threading.Event()
        self._channel: Any = None
        self._pump: threading.Thread | None = None
        self._drain_lock = threading.Lock()

    def __enter__(self) -> RayEngine:
        if not ray.is_initialized():
            _init(self.options)
            self._started = True
        try:
            self.slots = self._capacity()
            here = ray.get_runtime_context().get_node_id()
            self._channel = _Channel.options(  # type: ignore[attr-defined]
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
            self._pump = threading.Thread(target=self._pump_events, name="arena-ray-events", daemon=True)
            self._pump.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._pump is not None:
            self._pump.join(timeout=10)
        if self._channel is not None:
            with contextlib.suppress(RayError):
                ray.kill(self._channel)
        if self._started:
            ray.shutdown()

    def _capacity(self) -> int:
        resources = ray.cluster_resources()
        if self.gpu_share > 0:
            gpus = float(resources.get("GPU", 0))
            if gpus < self.gpu_share:
                raise ArenaError(f"--gpu-share {self.gpu_share:g}: the Ray cluster has {gpus:g} GPU(s); add GPU "
                                 "nodes, or use --gpu-share 0 / --device cpu")
            cap = int(gpus // self.gpu_share)
        else:
            cap = int(resources.get("CPU", 1))
        workers = self.options.workers
        return max(1, min(cap, workers) if workers > 1 else cap)

    def label(self) -> str:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        share = f", {self.gpu_share:g} GPU each" if self.gpu_share else ""
        return f"ray: {nodes} node(s), {self.slots} task(s) at once{share}"

    @contextlib.contextmanager
    def slot(self, index: int, in_use: int, ahead: bool = True) -> Iterator[Callable[..., Any]]:
        yield self.run

    def run(self, fn: Callable[..., T], args: tuple[Any, ...], on_event: Callable[..., Any] | None) -> T:
        """``fn(worker, *args, events)`` as one Ray task (retried where its worker or node died); its exception,
        if it raised one, is raised here; a task that could not finish at all is arena's failure (not stored)."""
        tag = uuid.uuid4().hex
        errors: list[BaseException] = []
        self._handlers[tag] = (on_event, errors)
        ref = _group_task.options(num_cpus=1, num_gpus=self.gpu_share).remote(fn, args, self._channel, tag)
        try:
            while not ray.wait([ref], timeout=0.5)[0]:
                pass
            result: T = ray.get(ref)
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, BaseException) else ArenaError(str(exc).splitlines()[0])) from None
        except RayError as exc:  # its worker or node died MAX_RETRIES + 1 times, or the cluster went away
            raise MachineryFailure(f"the Ray task failed {MAX_RETRIES + 1} times: {_first_line(exc)}") from None
        except BaseException:
            with contextlib.suppress(RayError):
                ray.cancel(ref, force=True)
            raise
        finally:
            self._drain()  # what the task sent last, before its result counts
            self._handlers.pop(tag, None)
        if errors:
            raise errors[0]
        return result

    def _pump_events(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(0.1)

    def _drain(self) -> bool:
        """Deliver the events the tasks sent (answering questions); False when there were none."""
        with self._drain_lock:
            try:
                batch = ray.get(self._channel.take.remote(), timeout=30)
            except (RayError, TimeoutError):
                return False
            for tag, n, args in batch:
                handler, errors = self._handlers.get(tag, (None, []))
                value = None
                if handler is not None:
                    try:
                        value = handler(*args)
                    except Exception as exc:  # raised in the task's driver thread once the task returns
                        errors.append(exc)
                if n is not None:
                    self._channel.answer.remote(n, value)
            return bool(batch)


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


def _init(options: RunOptions) -> None:
    """Join the cluster at ``options.ray_address``, or start a local Ray instance (no dashboard)."""
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": _env()}, "log_to_driver": False,
                              "logging_level": logging.ERROR}
    if options.ray_address is None:
        kwargs |= {"address": "local", "include_dashboard": False}
    else:
        kwargs["address"] = options.ray_address
    try:
        # Ray puts the driver's current folder on every worker's sys.path: started from a checkout of arena, its
        # workers would import the source tree's `arena/` (which holds no `arena.db`: setup maps the top-level
        # folders into the package) instead of the installed package. Joined from a neutral folder, they import
        # what is installed, as the driver does.
        with contextlib.chdir(tempfile.gettempdir()):
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = options.ray_address or "a local Ray instance"
        raise ArenaError(f"--ray-address {where}: cannot join the Ray cluster ({_first_line(exc)}); start one with "
                         "`ray start --head`, or leave --ray-address out for a local instance") from None


_ACTIVE: list[RayEngine] = []
_ACTIVE_LOCK = threading.Lock()


@contextlib.contextmanager
def session(options: RunOptions) -> Iterator[RayEngine]:
    """The Ray engine of this command: the one already open (a contest inside a tournament), else a new one."""
    with _ACTIVE_LOCK:
        active = _ACTIVE[-1] if _ACTIVE else None
    if active is not None:
        yield active
        return
    with RayEngine(options) as engine:
        with _ACTIVE_LOCK:
            _ACTIVE.append(engine)
        try:
            yield engine
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.remove(engine)
