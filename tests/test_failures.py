"""No run is poisoned: a failure of arena's own machinery is not the variant's crash and is never stored; a SIGKILL
(the OOM killer's signal, whoever used the memory) is retried once; ``--rerun-failed`` reruns the failures asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.db.store import Store
from arena.orchestration import execute as ex
from arena.orchestration.entries import Entry, Job
from arena.orchestration.execute import execute, plan, register
from arena.runner.loader import builtin
from arena.runner.provenance import basis_for
from arena.runner.worker import MachineryFailure, Worker, make_task

CPU = RunOptions(device="cpu", timeout_s=300)


def test_a_checkpoint_that_cannot_be_written_is_arena_s_failure_not_a_crash(tiny_spec: Any) -> None:
    task = make_task(tiny_spec, builtin("gf"), 0, None, CPU, checkpoint_path="/dev/full/ckpt.pt",
                     basis=basis_for(CPU))
    with Worker() as worker, pytest.raises(MachineryFailure, match=r"could not write /dev/full/ckpt\.pt"):
        worker.run(task)


def test_a_machinery_failure_stores_nothing_for_that_entry_and_the_others_go_on(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    basis = basis_for(CPU)
    entries = [Entry.of(builtin("gf")), Entry.of(builtin("ws"))]
    register(store, tiny_spec, entries)
    real = ex._run_group

    def disk_full_for_ws(spec: Any, worker: Worker, group: list[Job], *args: Any) -> Any:
        if group[0].entry.name == "ws":
            raise MachineryFailure("ws seed 0: could not write ckpt.pt: No space left on device")
        return real(spec, worker, group, *args)

    monkeypatch.setattr(ex, "_run_group", disk_full_for_ws)
    skipped: list[tuple[list[str], str]] = []
    jobs = plan(store, tiny_spec, entries, tiny_spec.seeds, basis)
    execute(store, tiny_spec, jobs, CPU, basis, on_skip=lambda js, why: skipped.append(([j.label for j in js], why)))
    stored = {(r.result.variant, r.result.status) for r in store.runs(tiny_spec.hash)}
    assert stored == {("gf", "ok")}  # ws: neither stored nor called crashed
    assert skipped == [(["ws seed 0", "ws seed 1"], "ws seed 0: could not write ckpt.pt: No space left on device")]
    assert {j.label for j in plan(store, tiny_spec, entries, tiny_spec.seeds, basis)} == {"ws seed 0", "ws seed 1"}
    store.close()


def test_a_sigkilled_run_is_retried_once_in_a_fresh_process(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[list[int]] = []
    real_train, real_run = ex.train_seeds, ex.run_checked

    def killed_first(worker: Worker, spec: Any, loaded: Any, seeds: list[int], *args: Any, **kw: Any) -> Any:
        calls.append(list(seeds))
        pending = real_train(worker, spec, loaded, seeds, *args, **kw)
        # as if the OOM killer took the worker during seed 1
        pending.results[1].status = "crashed"
        pending.results[1].error = "the worker process was killed by SIGKILL (killed: out of memory?)"
        return pending

    def again(worker: Worker, spec: Any, loaded: Any, seeds: list[int], *args: Any, **kw: Any) -> Any:
        calls.append(list(seeds))
        return real_run(worker, spec, loaded, seeds, *args, **kw)

    monkeypatch.setattr(ex, "train_seeds", killed_first)
    monkeypatch.setattr(ex, "run_checked", again)
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    basis = basis_for(CPU)
    gf = Entry.of(builtin("gf"))
    register(store, tiny_spec, [gf])
    execute(store, tiny_spec, plan(store, tiny_spec, [gf], tiny_spec.seeds, basis), CPU, basis)
    assert calls == [[0, 1], [1]]
    runs = {r.result.seed: r.result for r in store.runs(tiny_spec.hash)}
    assert runs[1].status == "ok" and runs[1].env["retried"] == "after SIGKILL"
    store.close()


def test_rerun_failed_plans_only_the_chosen_failures(tiny_spec: Any, tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    basis = basis_for(CPU)
    gf = Entry.of(builtin("gf"))
    register(store, tiny_spec, [gf])
    for seed, status in zip(tiny_spec.seeds, ("crashed", "timeout"), strict=True):
        store.record_run(RunResult(variant="gf", variant_sha=gf.loaded.sha256, spec_hash=tiny_spec.hash, seed=seed,
                                   hparams=gf.hparams.to_dict(), status=status, code_digest=basis.code,
                                   stack_id=basis.stack))
    assert plan(store, tiny_spec, [gf], tiny_spec.seeds, basis) == []
    assert [j.seed for j in plan(store, tiny_spec, [gf], tiny_spec.seeds, basis, rerun_failed=("crashed",))] == [0]
    both = plan(store, tiny_spec, [gf], tiny_spec.seeds, basis, rerun_failed=("crashed", "timeout"))
    assert [j.seed for j in both] == [0, 1]
    store.close()
