"""A group whose machine is lost (``MachineLost``: a Ray slot's actor died with its node) goes back to the schedule
and another slot trains it: every run stored exactly once, none lost because the other slots had already run out
of work, and a group that keeps losing its machine is left for the next command instead of looping."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from arena.core.options import RunOptions
from arena.core.stack import Basis
from arena.db.store import Store
from arena.orchestration import execute as execute_module
from arena.orchestration.engines import local_slot
from arena.orchestration.entries import Entry, Job
from arena.orchestration.execute import execute, plan, register
from arena.orchestration.schedule import REQUEUES, Schedule
from arena.runner.loader import builtin
from arena.runner.processes import MachineLost
from arena.runner.provenance import basis_for

CPU = RunOptions(device="cpu", timeout_s=300, workers=2)


def test_a_slot_with_nothing_to_hand_out_waits_for_the_groups_in_flight(tmp_path: Path, tiny_spec: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    gf = Entry.of(builtin("gf"))
    register(store, tiny_spec, [gf])
    stop = threading.Event()
    with Schedule(store, tiny_spec, Basis("code", "stack"), [[Job(gf, 0), Job(gf, 1)]], poll_s=0.05) as schedule:
        first = schedule.next(stop)
        assert first is not None and len(first.train) == 2
        got: list[Any] = []
        other = threading.Thread(target=lambda: got.append(schedule.next(stop)))
        other.start()
        time.sleep(0.3)
        assert other.is_alive()  # not None at once: the group in flight may come back
        assert schedule.requeue(first.train)
        schedule.release_jobs(first.train)
        other.join(timeout=10)
        assert got and got[0] is not None and [j.label for j in got[0].train] == ["gf seed 0", "gf seed 1"]
        for _ in range(REQUEUES - 1):
            assert schedule.requeue(got[0].train)
        assert not schedule.requeue(got[0].train)  # the fourth time: left for the next command
        schedule.todo.clear()
        schedule.release_jobs(got[0].train)
        assert schedule.next(stop) is None  # nothing in flight, nothing to hand out
    store.close()


class _LosingEngine:
    """Two local slots; slot 0 loses its machine at its first group (before training, or during its check)."""

    name = "local"
    slots = 2

    def __init__(self, when: str) -> None:
        self.when = when
        self.lost: list[str] = []

    @contextlib.contextmanager
    def slot(self, index: int, in_use: int, ahead: bool = True) -> Iterator[Any]:
        with local_slot(threads=1, standby=False) as run:
            def runner(fn: Any, args: tuple[Any, ...], on_event: Any) -> Any:
                group = args[1]
                if index == 0 and not self.lost:
                    self.lost.append(group[0].entry.name)
                    if self.when == "train":
                        raise MachineLost("its node is gone")
                    out = run(fn, args, on_event)

                    def lost_check() -> Any:
                        out()  # checked, then lost with its machine: nothing of it is recorded
                        raise MachineLost("its node went during the check")

                    return lost_check
                return run(fn, args, on_event)

            yield runner

    def label(self) -> str:
        return "2 worker(s)"


@pytest.mark.parametrize("when", ["train", "check"])
def test_a_group_whose_machine_is_lost_trains_again_in_another_slot(
    tmp_path: Path, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    engine = _LosingEngine(when)

    @contextlib.contextmanager
    def fake_open(options: RunOptions) -> Iterator[Any]:
        yield engine

    monkeypatch.setattr(execute_module, "open_engine", fake_open)
    store = Store(f"sqlite:///{tmp_path / 'b.db'}")
    entries = [Entry.of(builtin(n)) for n in ("gf", "ws", "gpt")]
    register(store, tiny_spec, entries)
    basis = basis_for(CPU)
    jobs = plan(store, tiny_spec, entries, tiny_spec.seeds, basis)
    skipped: list[Any] = []
    results = execute(store, tiny_spec, jobs, CPU, basis, overlap_checks=when == "check",
                      on_skip=lambda group, why: skipped.append(why))
    runs = store.runs(tiny_spec.hash)
    assert engine.lost  # slot 0 lost its first group ...
    assert skipped == []  # ... which was not skipped but trained again
    assert sorted((r.result.variant, r.result.seed) for r in runs) == sorted(
        (n, s) for n in ("gf", "ws", "gpt") for s in tiny_spec.seeds)  # every run, once
    assert {r.result.status for r in runs} == {"ok"} and len(results) == len(jobs)
    assert store.claims() == []
    store.close()
