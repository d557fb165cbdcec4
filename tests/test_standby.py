"""Processes started ahead of need (``runner.standby``): the next variant's worker and the clean check, set up
while a group trains. Exercised on the CPU by forcing them (on a GPU they start by themselves)."""

from __future__ import annotations

from dataclasses import replace

from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.runner.loader import builtin
from arena.runner.provenance import basis_for
from arena.runner.standby import Standby
from arena.runner.trials import run_checked
from arena.runner.verify import verify
from arena.runner.worker import Worker, make_task

OPTIONS = RunOptions(device="cpu", timeout_s=300)


def _fingerprint(results: list) -> list[tuple]:
    return [(r.seed, r.status, r.final_val_loss, tuple(v for _, v in r.train_curve)) for r in results]


def test_the_next_variant_runs_in_the_standby_started_while_the_last_one_trained(tiny_spec) -> None:
    with Worker(threads=1, standby=True) as worker:
        first = run_checked(worker, tiny_spec, builtin("gf"), [0], None, OPTIONS)
        spare = worker._spare
        assert spare is not None and spare.proc.is_alive()  # started beside gf's worker
        gf_pid = worker._proc.pid
        second = run_checked(worker, tiny_spec, builtin("cp"), [0], None, OPTIONS)
        assert worker._proc.pid == spare.proc.pid != gf_pid  # cp ran in the standby, a process of its own
        assert worker._spare is not None and worker._spare is not spare  # and the next one is waiting
        waiting = worker._spare.proc
    assert not waiting.is_alive()  # closing the worker ends its standby too
    with Worker(threads=1, standby=False) as plain:
        assert plain._spare is None
        again = run_checked(plain, tiny_spec, builtin("gf"), [0], None, OPTIONS)
        again += run_checked(plain, tiny_spec, builtin("cp"), [0], None, OPTIONS)
        assert plain._spare is None
    assert all(r.status == "ok" and r.env.get("verified") for r in first + second), [r.error for r in first + second]
    assert _fingerprint(first + second) == _fingerprint(again)  # the same runs, bit for bit


def test_a_standby_that_died_is_replaced_by_a_fresh_process(tiny_spec) -> None:
    with Worker(threads=1, standby=True) as worker:
        run_checked(worker, tiny_spec, builtin("gf"), [0], None, OPTIONS)
        assert worker._spare is not None
        worker._spare.proc.kill()
        worker._spare.proc.join(timeout=10)
        results = run_checked(worker, tiny_spec, builtin("cp"), [0], None, OPTIONS)
    assert results[0].status == "ok" and results[0].env.get("verified"), results[0].error


def test_the_clean_check_in_a_standby_gives_the_fresh_process_verdict(tiny_spec, tmp_path) -> None:
    paths = {0: str(tmp_path / "seed0.pt")}
    with Worker(threads=1) as worker:
        task = make_task(tiny_spec, builtin("gf"), [0], None, OPTIONS, None, basis_for(OPTIONS, worker.env))
        results = worker.run_pack(replace(task, state_paths=(paths[0],)))
    gf = builtin("gf")
    fresh = verify(tiny_spec, gf.source, gf.path, [RunResult.from_dict(r.to_dict()) for r in results], [paths[0]],
                   OPTIONS)
    standby = Standby(None)
    pid = standby.proc.pid
    handed = verify(tiny_spec, gf.source, gf.path, results, [paths[0]], OPTIONS, standby=standby)
    assert not standby.proc.is_alive() and standby.proc.pid == pid
    assert [(r.status, r.env.get("verified"), r.final_val_loss) for r in handed] == [
        (r.status, r.env.get("verified"), r.final_val_loss) for r in fresh]
    assert handed[0].env.get("verified") is True


def test_a_standby_runs_nothing_until_it_is_handed_its_target() -> None:
    from multiprocessing.connection import _ConnectionBase

    standby = Standby(None)
    assert standby.proc.is_alive()
    assert not standby.conn.poll(0.5)  # waiting: it has been told nothing
    handed = standby.hand(_ConnectionBase.send, ("ran",))  # target(conn, *args) in the child: it answers
    assert handed is not None
    proc, conn = handed
    assert conn.recv() == "ran"
    proc.join(timeout=30)
    assert proc.exitcode == 0
    dead = Standby(None)
    dead.proc.kill()
    dead.proc.join(timeout=10)
    assert dead.hand(_ConnectionBase.send, ("ran",)) is None  # the caller starts a fresh child instead


def test_the_first_worker_starts_in_the_process_started_before_the_entry_check() -> None:
    # arena tournament on a GPU starts the first worker's process before checking the files (its ≈ 14 s of start-up
    # overlap the check); the first worker with that environment takes it, once.
    from arena.runner import standby

    env = {"ARENA_TEST_SLOT": "0"}
    standby.start_ahead(env)
    ahead = standby._AHEAD[(("ARENA_TEST_SLOT", "0"),)]
    standby.start_ahead(env)  # one is waiting already: no second
    assert len(standby._AHEAD) == 1 and ahead.proc.is_alive()
    with Worker(threads=1, env=env, standby=False) as worker:
        worker._ensure("a-variant", gpu=True)
        assert worker._proc.pid == ahead.proc.pid
    assert standby.take_ahead(env) is None and not ahead.proc.is_alive()
    with Worker(threads=1, env={"ARENA_TEST_SLOT": "1"}, standby=False) as other:
        other._ensure("a-variant", gpu=False)  # a CPU worker never takes a GPU process
    standby.start_ahead({})
    unused = standby._AHEAD[()].proc
    standby.end_ahead()  # the command had nothing to train: it ends it
    assert not unused.is_alive() and not standby._AHEAD


def test_the_engine_starts_one_process_ahead_per_gpu_of_its_slots_and_none_on_a_cpu(monkeypatch) -> None:
    from arena.orchestration import engines
    from arena.runner import provenance, standby

    started: list[dict[str, str]] = []
    monkeypatch.setattr(standby, "start_ahead", lambda env=None: started.append(dict(env or {})))
    engines.start_ahead(OPTIONS)
    assert started == []
    monkeypatch.setattr(provenance, "resolved_device", lambda options: "cuda")
    engines.start_ahead(RunOptions(device="cuda", timeout_s=300, workers=4, gpus=(0, 1)))
    assert started == [{"CUDA_VISIBLE_DEVICES": g} for g in "0101"]  # the pool keeps one per environment
    started.clear()
    engines.start_ahead(RunOptions(device="cuda", timeout_s=300, engine="ray"))
    assert started == []  # a Ray slot starts its own process where Ray places its actor
