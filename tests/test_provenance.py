"""Memo keys that see the code and the stack: a run computed by other code or on another stack is never reused,
paired or averaged with this one."""

from __future__ import annotations

import copy
import importlib.util
import pkgutil
from pathlib import Path
from typing import Any

import pytest

from arena.core.options import RunOptions
from arena.core.result import RunResult, run_key
from arena.core.stack import Basis
from arena.db.store import Store
from arena.orchestration.entries import Entry
from arena.orchestration.execute import plan, register
from arena.orchestration.leaderboard import build
from arena.runner import provenance
from arena.runner.loader import builtin


def test_every_module_that_computes_a_run_is_in_the_code_digest() -> None:
    """A new module of the model core or the loop must be listed, or editing it would not change the keys."""
    import arena.model

    listed = set(provenance.CODE_MODULES)
    model = {f"arena.model.{m.name}" for m in pkgutil.iter_modules(arena.model.__path__)}
    assert model - {"arena.model.autotune", "arena.model.attribution"} <= listed, model - listed
    for name in ("arena.core.fusions", "arena.core.spec", "arena.runner.train", "arena.runner.optim",
                 "arena.runner.evaluate", "arena.runner.tracks", "arena.runner.corpus", "arena.runner.feed"):
        assert name in listed
    import arena.runner

    # The runner's modules that compute nothing a run records: processes, isolation, loading and bookkeeping.
    plumbing = {"worker", "processes", "standby", "inspection", "loader", "policy", "guard", "provenance", "trials",
                "env", "repeat"}
    runner = {f"arena.runner.{m.name}" for m in pkgutil.iter_modules(arena.runner.__path__) if m.name not in plumbing}
    assert runner <= listed, runner - listed


@pytest.mark.parametrize("module", ["arena.core.fusions", "arena.runner.train", "arena.model.lm"])
def test_editing_a_stock_fusion_the_loop_or_the_model_changes_the_digest(
    module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = provenance.code_digest()
    real = importlib.util.find_spec(module)
    assert real is not None and real.origin is not None
    edited = tmp_path / "edited.py"
    edited.write_text(Path(real.origin).read_text(encoding="utf-8") + "\n# an edit\n", encoding="utf-8")
    find = importlib.util.find_spec

    def fake(name: str, *args: Any) -> Any:
        spec = find(name, *args)
        if name == module and spec is not None:
            spec = copy.copy(spec)  # find_spec hands out the imported module's own spec: never edit that one
            spec.origin = str(edited)
        return spec

    provenance.code_digest.cache_clear()
    monkeypatch.setattr(provenance.importlib.util, "find_spec", fake)
    try:
        assert provenance.code_digest() != before
    finally:
        monkeypatch.undo()
        provenance.code_digest.cache_clear()
    assert provenance.code_digest() == before


def test_the_key_sees_code_and_stack() -> None:
    base = run_key("a" * 64, "spec", 0, {"lr_mult": 1.0}, "code1", "stack1")
    assert run_key("a" * 64, "spec", 0, {"lr_mult": 1.0}, "code2", "stack1") != base
    assert run_key("a" * 64, "spec", 0, {"lr_mult": 1.0}, "code1", "stack2") != base
    assert run_key("a" * 64, "spec", 0, {"lr_mult": 1.0}, "code1", "stack1") == base


def test_the_stack_of_a_cpu_run_names_the_device_torch_and_backend() -> None:
    import torch

    info = provenance.local_stack(RunOptions(device="cpu"))
    assert info == {"device": "cpu", "torch": torch.__version__, "backend": "auto", "mode": "eager"}
    assert provenance.local_stack(RunOptions(device="cpu", backend="torch_recurrent"))["backend"] == "torch_recurrent"
    a, b = provenance.basis_for(RunOptions(device="cpu")), provenance.basis_for(RunOptions(device="cpu"))
    assert a == b and a.code == provenance.code_digest()


def _result(entry: Entry, spec_hash: str, seed: int, basis: Basis, loss: float, env: dict[str, Any]) -> RunResult:
    return RunResult(variant=entry.name, variant_sha=entry.loaded.sha256, spec_hash=spec_hash, seed=seed,
                     hparams=entry.hparams.to_dict(), final_val_loss=loss, code_digest=basis.code,
                     stack_id=basis.stack, env=env, params_total=100, params_target=100)


def test_a_run_from_other_code_is_recomputed_and_never_averaged(tmp_path: Path, tiny_spec: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    gf = Entry.of(builtin("gf"))
    register(store, tiny_spec, [gf])
    old = Basis.of("oldcode", {"device": "cpu"})
    new = Basis.of("newcode", {"device": "cpu"})
    for seed in tiny_spec.seeds:
        store.record_run(_result(gf, tiny_spec.hash, seed, old, 3.0, {"device": "cpu"}))
    assert plan(store, tiny_spec, [gf], tiny_spec.seeds, old) == []  # memoized on the code that made them
    assert len(plan(store, tiny_spec, [gf], tiny_spec.seeds, new)) == len(tiny_spec.seeds)  # the edit: recompute
    store.record_run(_result(gf, tiny_spec.hash, 0, new, 2.0, {"device": "cpu"}))
    board = build(store, tiny_spec.hash, code="newcode", stack=new.stack)
    (row,) = board.rows
    assert row.losses == {0: 2.0} and row.missing == [1] and row.mean is None  # never mixed with the old code's
    assert board.stale_runs == len(tiny_spec.seeds)
    store.close()


def test_a_cpu_run_and_a_gpu_run_of_the_same_entry_are_never_averaged(tmp_path: Path, tiny_spec: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    gf = Entry.of(builtin("gf"))
    register(store, tiny_spec, [gf])
    cpu = Basis.of("code", {"device": "cpu"})
    gpu = Basis.of("code", {"device": "cuda", "gpu": "NVIDIA H200"})
    assert gf.key(tiny_spec, 0, cpu) != gf.key(tiny_spec, 0, gpu)
    for seed, (a, b) in zip(tiny_spec.seeds, [(3.0, 2.0), (3.2, 2.2)], strict=True):
        store.record_run(_result(gf, tiny_spec.hash, seed, cpu, a, {"device": "cpu"}))
        store.record_run(_result(gf, tiny_spec.hash, seed, gpu, b, {"device": "cuda", "gpu": "NVIDIA H200"}))
    on_cpu = build(store, tiny_spec.hash, code="code", stack=cpu.stack)
    on_gpu = build(store, tiny_spec.hash, code="code", stack=gpu.stack)
    assert on_cpu.rows[0].mean == pytest.approx(3.1) and on_gpu.rows[0].mean == pytest.approx(2.1)
    assert on_cpu.other_stacks == {gpu.stack: 2} and on_gpu.other_stacks == {cpu.stack: 2}
    store.close()


def test_a_worker_with_other_code_refuses_the_task(tiny_spec: Any) -> None:
    from arena.core.errors import ArenaError
    from arena.runner.worker import Worker, make_task

    stale = Basis.of("not-this-code", provenance.local_stack(RunOptions(device="cpu")))
    task = make_task(tiny_spec, builtin("gf"), 0, None, RunOptions(device="cpu"), basis=stale)
    with Worker() as worker, pytest.raises(ArenaError, match="arena's code changed since this command started"):
        worker.run(task)
