"""One execution-options object flows unchanged from the flags of every command that trains to the worker's task
(the worker hands ``task.options`` to ``train``: tests/test_runner.py runs that path)."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import torch
import typer

from arena.cli.app import app, main
from arena.core.options import Execution, RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.runner import verify, worker

RUNNER_FLAGS = ["--device", "cpu", "--backend", "torch_recurrent", "--mode", "eager", "--workers", "1",
                "--foreach-adamw", "--pageable-batches"]
EXPECTED = RunOptions(device="cpu", backend="torch_recurrent", mode="eager", timeout_s=77.0, workers=1,
                      execution=Execution(pinned_batches=False, fused_adamw=False))


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[RunOptions]:
    """Worker.run replaced by a recorder that returns an ok result (no child process, no training)."""
    tasks: list[RunOptions] = []

    def fake_run(self: worker.Worker, task: worker.Task, on_event: Any = None) -> list[RunResult]:
        tasks.append(task.options)
        return [RunResult(variant=task.variant_name, variant_sha=task.variant_sha,
                          spec_hash=Spec.from_dict(task.spec).hash, seed=seed, hparams=dict(task.hparams),
                          status="ok", final_val_loss=2.0 + 0.01 * seed, val_curve=[(1, 2.0)]) for seed in task.seeds]

    monkeypatch.setattr(worker.Worker, "run_pack", fake_run)
    monkeypatch.setattr(verify, "verify", lambda spec, source, path, results, *a, **k: list(results))
    return tasks


def arena(*args: str) -> int:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            import sys

            sys.argv = ["arena", *args]
            main()
        except SystemExit as exc:
            return int(exc.code or 0)
    return 0


def _variant_file(tmp_path: Path) -> str:
    from arena.runner.loader import builtin

    path = tmp_path / "mine.py"
    path.write_text(builtin("gf").source.replace('name="gf"', 'name="mine"'), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", ["run", "submit", "tournament", "noise", "tune"])
def test_every_training_command_passes_the_options_unchanged(
    command: str, seen: list[RunOptions], tiny_flags: list[str], tmp_path: Path
) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'arena.db'}"]
    timeout = ["--trial-timeout", "77"] if command == "tune" else ["--timeout", "77"]
    head = {"run": ["run", "gf"], "submit": ["submit", _variant_file(tmp_path)],
            "tournament": ["tournament", "--variants", "gf,hy"], "noise": ["noise", "--measure"],
            "tune": ["tune", "gf", "--trials", "2"]}[command]
    code = arena(*head, *tiny_flags, *RUNNER_FLAGS, *timeout, *db)
    assert code == 0
    assert seen and all(options == EXPECTED for options in seen), seen


def test_every_training_command_has_every_runner_flag() -> None:
    names = {"--device", "--backend", "--mode", "--workers", "--gpus", "--pinned-batches", "--fused-adamw"}
    commands = {c.callback.__name__: c for c in typer.main.get_command(app).commands.values()  # type: ignore[attr-defined]
                if c.callback is not None}
    for name in ("run", "submit", "tournament", "tune", "noise"):
        flags = {opt for p in commands[name].params for opt in p.opts}
        assert names <= flags, (name, names - flags)
        assert ("--trial-timeout" if name == "tune" else "--timeout") in flags


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [("--device", "cudaa", "--device must be"), ("--backend", "foo", "--backend must be"),
     ("--mode", "fast", "--mode must be"), ("--timeout", "-5", "--timeout must be"),
     ("--timeout", "0", "--timeout must be"), ("--workers", "0", "--workers must be"),
     ("--gpus", "a,b", "--gpus wants"),
     pytest.param("--device", "cuda", "sees no CUDA device",
                  marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA"))],
)
def test_bad_runner_flags_are_refused_before_anything_is_written(
    flag: str, value: str, fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    db = tmp_path / "arena.db"
    sys.argv = ["arena", "run", "gf", "--preset", "smoke", flag, value, "--db", f"sqlite:///{db}"]
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err
    assert not db.exists()
