"""A slot trains its next group while the last one is checked (``execute(overlap_checks=...)``, on by default on a
GPU): the same results as one after the other, every group recorded when its own check ends, no claim left, and an
arena failure in a check is that group's skip, never the variant's result."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from arena.core.options import RunOptions
from arena.db.store import Store
from arena.orchestration.entries import Entry, Job
from arena.orchestration.execute import execute, overlaps_checks, plan, register
from arena.runner import trials
from arena.runner.loader import builtin
from arena.runner.provenance import basis_for
from arena.runner.worker import MachineryFailure

CPU = RunOptions(device="cpu", timeout_s=300)


def _tournament(tmp_path: Path, name: str, spec: Any, overlap: bool, **kw: Any) -> tuple[Store, list[Entry]]:
    store = Store(f"sqlite:///{tmp_path / name}")
    entries = [Entry.of(builtin("gf")), Entry.of(builtin("ws"))]
    register(store, spec, entries)
    basis = basis_for(CPU)
    execute(store, spec, plan(store, spec, entries, spec.seeds, basis), CPU, basis, overlap_checks=overlap, **kw)
    return store, entries


def _finals(store: Store, spec: Any) -> dict[tuple[str, int], tuple[str, float | None]]:
    return {(r.result.variant, r.result.seed): (r.result.status, r.result.final_val_loss)
            for r in store.runs(spec.hash)}


def _claims(tmp_path: Path, name: str) -> int:
    return int(sqlite3.connect(tmp_path / name).execute("select count(*) from arena_claims").fetchone()[0])


def test_the_next_group_trains_while_the_last_is_checked_and_the_results_are_the_same(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial, _ = _tournament(tmp_path, "serial.db", tiny_spec, overlap=False)
    # The first group's check waits until the second group has started training: without the overlap the slot
    # would wait for that check first, and this would time out.
    second_started, waited = threading.Event(), list[bool]()
    real_finish = trials.PendingCheck.finish

    def finish_after_the_next_starts(self: trials.PendingCheck) -> Any:
        if not waited:
            waited.append(second_started.wait(timeout=120))
        return real_finish(self)

    def on_progress(slot: int, job: Job, event: dict[str, Any]) -> None:
        if job.entry.name == "ws":
            second_started.set()

    done: list[str] = []
    monkeypatch.setattr(trials.PendingCheck, "finish", finish_after_the_next_starts)
    overlapped, _ = _tournament(tmp_path, "overlap.db", tiny_spec, overlap=True, on_progress=on_progress,
                                on_done=lambda slot, job, r: done.append(job.label))
    assert waited == [True]
    assert _finals(overlapped, tiny_spec) == _finals(serial, tiny_spec)
    assert all(status == "ok" for status, _ in _finals(overlapped, tiny_spec).values())
    assert sorted(done) == ["gf seed 0", "gf seed 1", "ws seed 0", "ws seed 1"]
    assert _claims(tmp_path, "overlap.db") == 0
    serial.close()
    overlapped.close()


def test_an_arena_failure_in_an_overlapped_check_skips_only_that_group(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_finish = trials.PendingCheck.finish

    def broken_for_gf(self: trials.PendingCheck) -> Any:
        if self.loaded.name == "gf":
            self.cancel()
            raise MachineryFailure("gf: the clean-check process could not start")
        return real_finish(self)

    monkeypatch.setattr(trials.PendingCheck, "finish", broken_for_gf)
    skipped: list[tuple[list[str], str]] = []
    store, entries = _tournament(tmp_path, "a.db", tiny_spec, overlap=True,
                                 on_skip=lambda jobs, why: skipped.append(([j.label for j in jobs], why)))
    assert {k: v[0] for k, v in _finals(store, tiny_spec).items()} == {("ws", 0): "ok", ("ws", 1): "ok"}
    assert skipped == [(["gf seed 0", "gf seed 1"], "gf: the clean-check process could not start")]
    assert _claims(tmp_path, "a.db") == 0
    basis = basis_for(CPU)
    assert {j.label for j in plan(store, tiny_spec, entries, tiny_spec.seeds, basis)} == {"gf seed 0", "gf seed 1"}
    store.close()


def test_checks_overlap_by_default_only_on_a_gpu() -> None:
    assert overlaps_checks(RunOptions(device="cuda"))
    assert overlaps_checks(RunOptions(device="cuda", engine="ray"))  # a Ray slot's actor checks beside training
    assert not overlaps_checks(RunOptions(device="cpu"))
    assert not overlaps_checks(RunOptions(device="cpu", engine="ray"))


def test_a_decision_gives_each_entry_its_own_runs_when_a_tuned_entry_shares_its_variant(
    tiny_spec: Any, tmp_path: Path
) -> None:
    # A tuned entry's results are named for its variant (gf), like the champion's: they go by sha and hparams.
    from arena.core.result import RunResult
    from arena.orchestration.contest import Contests

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    gf = builtin("gf")
    champ = Entry.of(gf)
    tuned = Entry.of(gf, {"gate_init": 0.2}, name="gf@tuned-3", origin="tuned", league="tuned-3")

    def trainer(jobs: Any, title: str) -> list[RunResult]:  # what a worker would send back, without training
        return [RunResult(variant="gf", variant_sha=j.entry.loaded.sha256, spec_hash=tiny_spec.hash, seed=j.seed,
                          hparams=j.entry.hparams.to_dict(), status="ok",
                          final_val_loss=1.0 if j.entry is champ else 2.0) for j in jobs]

    contests = Contests(store, tiny_spec, CPU, basis_for(CPU), trainer=trainer)
    got = contests.ensure_many([champ, tuned], [3, 4])
    assert {s: r.final_val_loss for s, r in got["gf"].items()} == {3: 1.0, 4: 1.0}
    assert {s: r.final_val_loss for s, r in got["gf@tuned-3"].items()} == {3: 2.0, 4: 2.0}
    store.close()


def test_a_slot_that_fails_ends_its_last_check_before_its_worker_closes(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gf's check is still running when ws's group fails in the slot: the slot's worker (whose processes the check
    # may use) closes only after that check, and gf's finished group is recorded.
    from arena.orchestration import execute as execute_module
    from arena.runner.worker import Worker

    events: list[str] = []
    real_finish, real_close, real_train = trials.PendingCheck.finish, Worker.close, execute_module._train_in_worker

    def slow_finish(self: trials.PendingCheck) -> Any:
        threading.Event().wait(1.0)  # ws fails meanwhile
        out = real_finish(self)
        events.append("checked")
        return out

    def close(self: Worker, spare: bool = True) -> None:
        events.append("closed")
        real_close(self, spare)

    def train(worker: Worker, spec: Any, group: list[Job], *args: Any) -> Any:
        if group[0].entry.name == "ws":
            raise RuntimeError("ws: arena broke")
        return real_train(worker, spec, group, *args)

    monkeypatch.setattr(trials.PendingCheck, "finish", slow_finish)
    monkeypatch.setattr(Worker, "close", close)
    monkeypatch.setattr(execute_module, "_train_in_worker", train)
    with pytest.raises(RuntimeError, match="ws: arena broke"):
        _tournament(tmp_path, "a.db", tiny_spec, overlap=True)
    assert events[:2] == ["checked", "closed"]
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    assert {k: v[0] for k, v in _finals(store, tiny_spec).items()} == {("gf", 0): "ok", ("gf", 1): "ok"}
    store.close()
