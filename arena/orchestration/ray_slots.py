"""A slot of the Ray engine: one long-lived Ray actor that trains group after group in a runner ``Worker`` of its own,
on whichever node Ray placed it (``SPREAD``: across the nodes), so a crash, a timeout or a divergence stays a result
exactly as locally.

* Why an actor and not a task per group: the actor keeps its Worker from one group to the next, so on a GPU the next
  variant's child has started ahead in standby (``runner.standby``) instead of in a new process each group
  (2026-12-02, H200: 12–17 s of start-up a group as Ray tasks, 0.1–0.2 s with the local engine), and it runs two
  calls at once, so a group's clean check is made (``finish``) while the next group trains, as the local engine
  does (a task held its GPU share through its own check: Ray took 60% longer than local on the 7 × 3 tournament).
* Its work is the driver's ``fn(worker, *args, events)``; what that returns comes back, except a call to make later
  (a pending check), which stays in the actor under a key (``Later``) until the driver asks for it.
* An actor that dies (its process killed, its node lost) takes what it held with it. ``SlotHandle`` places another
  where the dead one's node is still alive; where it is gone and other slots still run, the group goes back to
  the execution (``MachineLost``) for one of them, since a new actor could not be placed while they hold the cluster.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from arena.orchestration.ray_events import Forwarder
from arena.runner.processes import MachineLost
from arena.runner.standby import end_ahead, start_ahead
from arena.runner.worker import Worker

PLACE_S = 60.0  # how long a replacement may take to be placed while its node is alive


@dataclass(frozen=True)
class Later:
    """A call the actor keeps for the driver to make later (``SlotActor.finish``): a group's clean check."""

    key: str


@ray.remote
class SlotActor:
    """One slot's actor (see the module docstring)."""

    def __init__(self) -> None:
        self._worker: Worker | None = None
        self._later: dict[str, Callable[[], Any]] = {}

    def ready(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], channel: Any, tag: str | None,
             ahead: bool) -> Any:
        if self._worker is None:
            threads = max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
            self._worker = Worker(threads=threads)
        worker = self._worker
        worker.standby = None if ahead else False  # as the local engine: a standby only if a next variant comes
        forward = Forwarder(channel, tag) if tag is not None else None
        try:
            out = worker.compute(fn, args, forward)
        finally:
            if forward is not None:
                forward.flush(wait=True)
        if callable(out):
            key = uuid.uuid4().hex
            self._later[key] = out
            return Later(key)
        return out

    def ahead(self) -> None:
        """Start the GPU standby its first group's Worker takes (``runner.standby.start_ahead``): its start-up
        overlaps the driver's entry check, as the local engine's first worker does."""
        start_ahead()

    def finish(self, key: str) -> Any:
        return self._later.pop(key)()

    def close(self) -> None:
        self._later.clear()  # an interrupted command's only: a slot's executions wait for their checks
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        end_ahead()  # started ahead for a group that never came


class SlotHandle:
    """The driver's side of one slot: its actor, replaced when it dies (thread-safe)."""

    def __init__(self, actor_options: dict[str, Any], live: Callable[[], int]) -> None:
        self.actor_options, self.live = actor_options, live
        self.actor: Any = None
        self.node: str | None = None
        self._lock = threading.Condition()
        self._replacing = False  # a thread of this slot is placing the dead actor's replacement

    def place(self, timeout: float | None) -> bool:
        """A new actor for this slot, placed and ready within ``timeout`` seconds (False: it was not). ``None``
        waits as long as the cluster is full, as a Ray task would: another driver's slots hold it (two users on
        one fleet: the second one's slots start as the first one's end), or it is scaling up."""
        actor = SlotActor.options(**self.actor_options).remote()  # type: ignore[attr-defined]
        ready = actor.ready.remote()
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while not ray.wait([ready], timeout=5.0)[0]:  # in steps: Ctrl-C reaches the driver
                if deadline is not None and time.monotonic() > deadline:
                    raise GetTimeoutError("not placed")
            node = ray.get(ready)
        except BaseException as exc:
            with contextlib.suppress(RayError):
                ray.kill(actor, no_restart=True)
            if isinstance(exc, (GetTimeoutError, RayError)):
                return False
            raise
        with self._lock:
            self.actor, self.node = actor, node
        return True

    def lost(self, actor: Any) -> None:
        """``actor`` died: place another, or raise ``MachineLost`` when none can be placed in time (its node gone
        while other slots still run: they hold the cluster, and one of them trains the group)."""
        with self._lock:
            # Both of a slot's threads (a group training, the last group's check) see one death: the second waits
            # for the first's replacement instead of giving the slot up while it is being placed.
            while self._replacing:
                self._lock.wait()
            if self.actor is not actor:  # replaced already (or given up: then run raises MachineLost)
                if self.actor is None:
                    raise MachineLost("a Ray slot lost its actor: its group trains again in another slot")
                return
            self.actor, node, self._replacing = None, self.node, True
        try:
            alive = node is not None and any(n.get("NodeID") == node and n.get("Alive") for n in ray.nodes())
            if (alive or self.live() <= 1) and self.place(PLACE_S if alive else None):
                return
        finally:
            with self._lock:
                self._replacing = False
                self._lock.notify_all()
        raise MachineLost("a Ray slot's actor died (its node is gone): its group trains again in another slot")

    def close(self) -> None:
        actor, self.actor = self.actor, None
        if actor is None:
            return
        with contextlib.suppress(RayError, GetTimeoutError):
            ray.get(actor.close.remote(), timeout=30)  # its Worker's processes end by their own pids
        with contextlib.suppress(RayError):
            ray.kill(actor, no_restart=True)
