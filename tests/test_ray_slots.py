"""A Ray slot's handle when its actor dies (``arena.orchestration.ray_slots.SlotHandle.lost``), without a cluster:
both of a slot's threads (a group training, the last group's check) see one death; the second must wait for the
first's replacement, not give the slot up while it is placed (that cost a slot for the rest of the command)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from arena.orchestration import ray_slots  # noqa: E402 (after the skip: Ray is an extra)
from arena.runner.processes import MachineLost  # noqa: E402


def _handle(monkeypatch: pytest.MonkeyPatch, placed: bool, live: int = 2) -> tuple[ray_slots.SlotHandle, list[str]]:
    monkeypatch.setattr(ray_slots.ray, "nodes", lambda: [{"NodeID": "n1", "Alive": True}])
    handle = ray_slots.SlotHandle({}, lambda: live)
    handle.actor, handle.node = "old", "n1"
    calls: list[str] = []

    def place(timeout: float | None) -> bool:
        calls.append("place")
        time.sleep(0.4)  # long enough for the other thread to see the same death meanwhile
        if placed:
            with handle._lock:
                handle.actor = f"new{len(calls)}"
        return placed

    monkeypatch.setattr(handle, "place", place)
    return handle, calls


def _both_lose(handle: ray_slots.SlotHandle) -> list[Any]:
    seen: list[Any] = []

    def lose(delay: float) -> None:
        time.sleep(delay)
        try:
            handle.lost("old")
            seen.append(handle.actor)  # what the thread's caller uses next
        except MachineLost:
            seen.append(MachineLost)

    threads = [threading.Thread(target=lose, args=(d,)) for d in (0.0, 0.1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    return seen


def test_the_second_thread_waits_for_the_first_ones_replacement(monkeypatch: pytest.MonkeyPatch) -> None:
    handle, calls = _handle(monkeypatch, placed=True)
    assert _both_lose(handle) == ["new1", "new1"]  # both go on with the one replacement
    assert calls == ["place"]  # placed once, not once per thread


def test_both_threads_give_up_when_no_replacement_can_be_placed(monkeypatch: pytest.MonkeyPatch) -> None:
    handle, calls = _handle(monkeypatch, placed=False)
    assert _both_lose(handle) == [MachineLost, MachineLost]  # both groups train again in another slot
    assert calls == ["place"] and handle.actor is None


def test_a_death_seen_after_the_replacement_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    handle, calls = _handle(monkeypatch, placed=True)
    handle.lost("old")
    handle.lost("old")  # a late report of the same death
    assert handle.actor == "new1" and calls == ["place"]
