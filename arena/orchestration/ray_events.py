"""How a Ray slot's work talks to the driver: one small actor on the driver's node (``Channel``) carries a group's
events in batches, and an ``eval`` event waits for the driver's answer (a search prunes that way); ``Forwarder`` is
the stand-in for the driver's ``on_event`` inside the slot, and adds where the work runs (``node``, ``gpu``, ``pid``).

Only the Ray engine's modules import this one (Ray is an extra: ``pip install "arena[ray]"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import ray
from ray.exceptions import RayError

ASK_TIMEOUT_S = 120.0  # an eval event's answer that never comes counts as "go on"
FLUSH_S = 0.5  # step events are sent at most this often


@ray.remote(num_cpus=0)
class Channel:
    """Events from the slots to the driver (``take``), and the driver's answers to the questions (``answer``)."""

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


def where() -> dict[str, Any]:
    node = ray.get_runtime_context().get_node_id()
    gpus = ",".join(str(g) for g in ray.get_gpu_ids())
    return {"node": f"{socket.gethostname()}/{node[:6]}", "gpu": gpus or None, "pid": os.getpid()}


class Forwarder:
    """The slot's stand-in for the driver's ``on_event``: events go out in batches, questions (eval events) wait."""

    def __init__(self, channel: Any, tag: str) -> None:
        self.channel, self.tag, self.where = channel, tag, where()
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
        """Send the batch; ``wait`` (a call's last flush) until the channel has it, so the driver sees every
        event of a call before its result."""
        if self.batch:
            with contextlib.suppress(RayError, TimeoutError):
                sent = self.channel.put.remote(self.tag, self.batch)
                if wait:
                    ray.get(sent, timeout=30)
            self.batch = []
        self.sent = time.monotonic()
