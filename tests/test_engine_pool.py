"""The local engine keeps each slot's worker between the executions of one command (a tournament and its champion
decision), and ends them when it closes."""

from __future__ import annotations

from arena.core.options import RunOptions
from arena.orchestration.engines import LocalEngine, open_engine

CPU = RunOptions(device="cpu", timeout_s=300)


def _worker_of(engine: LocalEngine, index: int = 0) -> object:
    with engine.slot(index, 1) as run:
        return run(lambda worker, *_: worker, (), None)


def test_a_slot_gets_the_worker_an_earlier_execution_left_and_closing_ends_it() -> None:
    with open_engine(CPU) as engine:
        assert isinstance(engine, LocalEngine)
        first = _worker_of(engine)
        assert _worker_of(engine) is first  # the next execution's slot: the same worker (its child, its standby)
        with open_engine(CPU) as nested:  # a contest inside the tournament: the same engine
            assert nested is engine and _worker_of(nested) is first
        closed: list[bool] = []
        first.close = lambda spare=True: closed.append(spare)  # type: ignore[attr-defined]
    assert closed == [True]  # the command's end ends the kept worker and its standby


def test_other_options_get_an_engine_of_their_own() -> None:
    with open_engine(CPU) as engine, open_engine(RunOptions(device="cpu", timeout_s=300, workers=2)) as other:
        assert other is not engine


def test_a_limit_fitted_after_the_engine_opened_keeps_its_workers() -> None:
    # The CLI opens the engine before the entry check and fits the per-run limit after it: the executions that
    # follow (with the fitted limit) must find the engine and its workers, not open one of their own.
    with open_engine(CPU) as engine, open_engine(RunOptions(device="cpu", timeout_s=42)) as fitted:
        assert fitted is engine


def test_a_failure_in_a_slot_ends_its_worker_instead_of_keeping_it() -> None:
    with open_engine(CPU) as engine:
        assert isinstance(engine, LocalEngine)
        first = _worker_of(engine)
        ended: list[bool] = []
        first.close = lambda spare=True: ended.append(spare)  # type: ignore[attr-defined]
        try:
            with engine.slot(0, 1) as run:
                run(lambda worker, *_: (_ for _ in ()).throw(RuntimeError("boom")), (), None)
        except RuntimeError:
            pass
        assert ended == [True]
        assert _worker_of(engine) is not first


def test_two_executions_of_one_command_train_in_the_same_worker_process(tiny_spec, tmp_path) -> None:
    # A tournament, then its champion decision (another execution of the same variant's seeds): the decision's
    # groups start in the process the tournament left, not in a new one.
    from arena.db.store import Store
    from arena.orchestration.entries import Entry
    from arena.orchestration.execute import execute, plan, register
    from arena.runner.loader import builtin
    from arena.runner.provenance import basis_for

    store = Store(f"sqlite:///{tmp_path / 'arena.db'}")
    entries = [Entry.of(builtin("gf"))]
    register(store, tiny_spec, entries)
    basis = basis_for(CPU)
    with open_engine(CPU) as engine:
        assert isinstance(engine, LocalEngine)
        first = execute(store, tiny_spec, plan(store, tiny_spec, entries, [0], basis), CPU, basis)
        (worker,) = engine._idle.values()
        pid = worker._proc.pid
        second = execute(store, tiny_spec, plan(store, tiny_spec, entries, [1], basis), CPU, basis)
        assert list(engine._idle.values()) == [worker] and worker._proc.pid == pid and worker._proc.is_alive()
        proc = worker._proc
    assert not proc.is_alive()  # the command's end ends it
    assert [r.status for r in first + second] == ["ok", "ok"], [r.error for r in first + second]
