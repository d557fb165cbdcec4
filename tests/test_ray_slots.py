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


class _FakeActor:
    def __init__(self, log: list[str]) -> None:
        self.ahead = type("M", (), {"remote": staticmethod(lambda: log.append("ahead"))})()


def test_the_ray_engine_places_its_slots_ahead_and_its_first_slots_use_them(monkeypatch: pytest.MonkeyPatch) -> None:
    # Placed while the driver checks the entry files (their start-up overlaps it), and taken by the first slots:
    # no second set of actors is placed for them.
    from arena.core.options import RunOptions
    from arena.orchestration import ray_engine

    log: list[str] = []

    class Handle:
        def __init__(self, options: dict[str, Any], live: Any) -> None:
            self.actor: Any = None

        def place(self, timeout: float | None) -> bool:
            log.append("place")
            self.actor = _FakeActor(log)
            return True

    monkeypatch.setattr(ray_engine, "SlotHandle", Handle)
    engine = ray_engine.RayEngine(RunOptions(device="cpu", engine="ray", gpu_share=0.5))
    engine.slots = 2
    engine.start_ahead()
    with engine.slot(0, 2), engine.slot(1, 2):
        assert log == ["place", "ahead", "place", "ahead"]
    assert len(engine._idle) == 2 and len(engine._all) == 2


def test_cpu_slots_are_not_placed_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    from arena.core.options import RunOptions
    from arena.orchestration import ray_engine

    # gpu_share 0: a CPU slot has no standby to start
    engine = ray_engine.RayEngine(RunOptions(device="cpu", engine="ray"))
    engine.start_ahead()
    assert engine._ahead is None


def test_a_slot_placed_ahead_after_the_command_ended_closes_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # The command ended (Ctrl-C during the entry check) while a slot was being placed ahead: on a cluster arena did
    # not start, nothing would end that actor but the placing thread itself; and no further slot is placed.
    from arena.core.options import RunOptions
    from arena.orchestration import ray_engine

    log: list[str] = []
    placing = threading.Event()
    release = threading.Event()

    class Handle:
        def __init__(self, options: dict[str, Any], live: Any) -> None:
            self.actor: Any = None

        def place(self, timeout: float | None) -> bool:
            log.append("place")
            placing.set()
            release.wait(10)
            self.actor = _FakeActor(log)
            return True

        def close(self) -> None:  # as SlotHandle.close: nothing to end before the actor is placed
            if self.actor is not None:
                log.append("close")
            self.actor = None

    monkeypatch.setattr(ray_engine, "SlotHandle", Handle)
    monkeypatch.setattr(ray_engine, "PLACE_S", -4.9)  # __exit__ waits 0.1 s for the placing thread
    engine = ray_engine.RayEngine(RunOptions(device="cpu", engine="ray", gpu_share=0.5))
    engine.slots = 3
    engine.start_ahead()
    assert placing.wait(10)
    engine.__exit__()  # gives up on the placement under way
    release.set()
    assert engine._ahead is not None
    engine._ahead.join(10)
    assert log == ["place", "close"]  # closed by the thread that placed it, no "ahead", no second placement
    assert engine._idle == []
