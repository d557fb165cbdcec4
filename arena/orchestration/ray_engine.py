"""The Ray engine (``--engine ray``): each slot is one Ray actor (``arena.orchestration.ray_slots``) that trains
group after group in a runner ``Worker`` of its own on whichever node Ray placed it, so a crash, a timeout or a
divergence stays a result exactly as locally.

* A slot asks for one CPU and ``options.gpu_share`` GPUs (default: 1 on CUDA, 0 on the CPU); the engine has as many
  as the cluster holds (capped by ``--workers`` when that is more than 1). A group whose slot's actor died trains
  again on a new actor, at most ``MAX_RETRIES`` times, or in another slot when its node is gone; what a slot
  returns is a list of plain results that the driver records, so the driver stays the only writer of the store (a
  SQLite store works across hosts).
* Events travel through one small actor on the driver's node (``ray_events.Channel``): a slot sends them in
  batches, and an ``eval`` event waits for the driver's answer (a search prunes that way). Every event carries
  ``node``, ``gpu`` and ``pid`` (of the slot's actor process).
* ``session(options)`` joins the cluster at ``options.ray_address`` or, without one, starts a local Ray instance,
  and stops what it started at the end. The driver's ``ARENA_*`` variables (data, home, limits) reach the slots.

Only ``arena.orchestration.engines`` imports this module (Ray is an extra: ``pip install "arena[ray]"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import ray
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.orchestration.ray_events import Channel
from arena.orchestration.ray_slots import PLACE_S, Later, SlotHandle
from arena.runner.processes import MachineLost
from arena.runner.provenance import resolved_device
from arena.runner.worker import MachineryFailure

T = TypeVar("T")
MAX_RETRIES = 3  # a group whose slot's actor died trains again on a new actor, up to this many times


def _env() -> dict[str, str]:
    """What the slots need of the driver's environment: its ``ARENA_*`` variables (never the store's URL)."""
    return {k: v for k, v in os.environ.items() if k.startswith("ARENA_") and k != "ARENA_DB"}


class RayEngine:
    """The Ray engine of one command (see the module docstring); ``slots`` is what the cluster runs at once
    (its GPUs / ``gpu_share``, or its CPUs), capped by ``--workers`` when that is more than 1. Its slots' actors
    serve every execution of the command (a tournament's decision starts in the actors its runs left)."""

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
        self._idle: list[SlotHandle] = []  # placed, between executions
        self._all: list[SlotHandle] = []
        self._in_use = 0
        self._lock = threading.Lock()
        self._ahead: threading.Thread | None = None
        self._closing = threading.Event()  # set first at exit: the slots still being placed ahead close themselves

    def __enter__(self) -> RayEngine:
        if not ray.is_initialized():
            _init(self.options)
            self._started = True
        try:
            self.slots = self._capacity()
            here = ray.get_runtime_context().get_node_id()
            self._channel = Channel.options(  # type: ignore[attr-defined]
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
            self._pump = threading.Thread(target=self._pump_events, name="arena-ray-events", daemon=True)
            self._pump.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        if self._ahead is not None:
            self._ahead.join(timeout=PLACE_S + 5)  # one placement at most is under way (see _place_ahead)
        with self._lock:
            handles, self._all, self._idle = list(self._all), [], []
        for handle in handles:
            handle.close()
        self._stop.set()
        if self._pump is not None:
            # Until it is out of Ray's calls (its take waits 30 s at most): a thread still inside Ray when it shuts
            # down can crash the interpreter at exit.
            self._pump.join(timeout=45)
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

    def start_ahead(self) -> None:
        """On GPU slots: place every slot's actor now, in the background, each starting its worker's standby, so
        that their start-up (Ray's worker process, kernel imports, a CUDA context: 12–17 s on an H200) overlaps the
        command's entry check instead of following it (``engines.start_ahead`` does the same for local workers)."""
        if self.gpu_share > 0 and self._ahead is None:
            self._ahead = threading.Thread(target=self._place_ahead, name="arena-ray-ahead", daemon=True)
            self._ahead.start()

    def _place_ahead(self) -> None:
        for _ in range(self.slots):
            if self._closing.is_set():
                return
            handle = self._handle()
            with self._lock:
                self._all.append(handle)
            if not handle.place(PLACE_S):  # the cluster is full (another driver's slots): placed when used
                return
            with self._lock:
                late = self._closing.is_set()  # __exit__ gave up waiting: its close may have missed this actor
                if not late:
                    self._idle.append(handle)
            if late:
                handle.close()  # on a cluster arena did not start, nothing else would end this actor
                return
            handle.actor.ahead.remote()

    def _handle(self) -> SlotHandle:
        # SPREAD: the slots go to every node before any node gets a second (fleet first, then depth).
        return SlotHandle({"num_cpus": 1, "num_gpus": self.gpu_share, "max_concurrency": 2, "max_restarts": 0,
                           "scheduling_strategy": "SPREAD"}, self._live)

    def label(self) -> str:
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        share = f", {self.gpu_share:g} GPU each" if self.gpu_share else ""
        return f"ray: {nodes} node(s), {self.slots} slot(s) at once{share}"

    def _live(self) -> int:
        with self._lock:
            return self._in_use

    @contextlib.contextmanager
    def slot(self, index: int, in_use: int, ahead: bool = True) -> Iterator[Callable[..., Any]]:
        """A slot's actor (one an earlier execution left, else a new one, placed by Ray) for the caller's groups."""
        if self._ahead is not None:
            self._ahead.join()  # the slots placed ahead are this command's first ones
        with self._lock:
            handle = self._idle.pop() if self._idle else None
            self._in_use += 1
        try:
            if handle is None:
                handle = self._handle()
                with self._lock:
                    self._all.append(handle)
                if not handle.place(None):  # waits while the cluster is full (another driver's slots)
                    raise MachineryFailure("a Ray slot's actor died as it started; run the command again")
            yield lambda fn, args, on_event: self.run(handle, fn, args, on_event, ahead)
        finally:
            with self._lock:
                self._in_use -= 1
                if handle is not None and handle.actor is not None:
                    self._idle.append(handle)

    def run(self, handle: SlotHandle, fn: Callable[..., T], args: tuple[Any, ...],
            on_event: Callable[..., Any] | None, ahead: bool = True) -> T:
        """``fn(worker, *args, events)`` in the slot's actor; its exception, if it raised one, is raised here. The
        group trains again on a new actor where its actor died (``MachineLost``: in another slot); a call to make
        later comes back as one here that asks the actor for it."""
        for _ in range(MAX_RETRIES + 1):
            actor = handle.actor
            if actor is None:  # a concurrent check found it dead and could not place another
                raise MachineLost("a Ray slot lost its actor: its group trains again in another slot")
            try:
                out = self._call(actor, fn, args, on_event, ahead)
            except RayActorError:
                handle.lost(actor)  # a new actor, or MachineLost
                continue
            if isinstance(out, Later):
                return lambda: self._finish(handle, actor, out.key)  # type: ignore[return-value]
            return out
        raise MachineryFailure(f"a Ray slot's actor died {MAX_RETRIES + 1} times in one group; run the command again")

    def _call(self, actor: Any, fn: Callable[..., Any], args: tuple[Any, ...], on_event: Callable[..., Any] | None,
              ahead: bool) -> Any:
        tag = uuid.uuid4().hex
        errors: list[BaseException] = []
        self._handlers[tag] = (on_event, errors)
        ref = actor.call.remote(fn, args, self._channel, tag, ahead)
        try:
            while not ray.wait([ref], timeout=0.5)[0]:
                pass
            result = ray.get(ref)
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayActorError:
            raise
        except RayError as exc:  # the cluster went away
            raise MachineryFailure(f"the Ray cluster failed: {_first_line(exc)}") from None
        finally:
            self._drain()  # what the slot sent last, before its result counts
            self._handlers.pop(tag, None)
        if errors:
            raise errors[0]
        return result

    def _finish(self, handle: SlotHandle, actor: Any, key: str) -> Any:
        """The call ``actor`` kept (a group's clean check); its actor dead: ``MachineLost`` (trained again)."""
        try:
            return ray.get(actor.finish.remote(key))
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayActorError:
            with contextlib.suppress(MachineLost):
                handle.lost(actor)  # the slot's next group gets a new actor if one can be placed
            raise MachineLost("a Ray slot's actor died during a clean check: its group trains again") from None
        except RayError as exc:
            raise MachineryFailure(f"the Ray cluster failed: {_first_line(exc)}") from None

    def _pump_events(self) -> None:
        while not self._stop.is_set():
            if not self._drain():
                self._stop.wait(0.1)

    def _drain(self) -> bool:
        """Deliver the events the slots sent (answering questions); False when there were none."""
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
                    except Exception as exc:  # raised in the slot's driver thread once its call returns
                        errors.append(exc)
                if n is not None:
                    self._channel.answer.remote(n, value)
            return bool(batch)


def _cause(exc: RayTaskError) -> BaseException:
    """What the slot's work raised (a variant's bad input, an arena failure), as it was raised there."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else ArenaError(str(exc).splitlines()[0])


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
