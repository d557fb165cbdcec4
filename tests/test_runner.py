"""The runner: determinism, paired data, failures as results (diverged, crashed, timeout, pruned), result fields."""

from __future__ import annotations

import math
import subprocess
import textwrap
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from arena.core.options import Execution, RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant
from arena.runner import loop as loop_mod
from arena.runner import train as train_mod
from arena.runner.data import load_track
from arena.runner.loader import builtin, load_source
from arena.runner.train import train
from arena.runner.trials import run_trial
from arena.runner.worker import Worker, make_task

GF = builtin("gf")
CPU_120 = RunOptions(device="cpu", timeout_s=120)


def bomb_variant(tmp_path: Path, action: str, *, after: int = 3, name: str = "bomb") -> LoadedVariant:
    """A gated-fusion hybrid that behaves for ``after`` training steps, then runs ``action`` inside forward.

    Each fusion instance counts its own training forwards (one per step), so the action fires at step ``after``.
    """
    body = textwrap.indent(textwrap.dedent(action).strip(), " " * 12)
    source = f'''"""{name}: a test variant that misbehaves after {after} steps."""

import os
import signal
import time
from collections.abc import Mapping

import torch
from torch import nn

from arena.api import Fusion, HParams, Variant, lr_mult


class Bomb(Fusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.gate = nn.Linear(d_model, d_model)
        self.calls = 0

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(self.gate(x)) * rwkv + mamba  # (B, T, D)
        if self.training:
            self.calls += 1
        if self.calls > {after}:
{body}
        return y


VARIANT = Variant(name="{name}", kind="fusion", summary="misbehaves on purpose", fusion=Bomb,
                  hparams={{"lr_mult": lr_mult()}})
'''
    path = tmp_path / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    # These files misbehave with os/signal/time on purpose: they test the runner's failure handling, so they skip
    # the static policy (which would refuse them before they ran; tests/test_security.py covers it).
    return load_source(source, str(path), policy=False)


@pytest.fixture(scope="module")
def worker() -> Any:
    """One child process shared by this module's tests (a trial that kills it gets a new one: that is tested)."""
    with Worker() as w:
        yield w


@pytest.fixture(scope="module")
def long_spec(tiny_spec: Spec) -> Spec:
    """30 steps with an eval every 3: long enough that stopping early is visible."""
    return tiny_spec.derive(steps=30)


# -- determinism and pairing -----------------------------------------------------------------------------------
def test_same_seed_is_bitwise_identical_in_process(tiny_spec: Spec) -> None:
    a = train(tiny_spec, GF, 0, options=RunOptions(device="cpu"))
    b = train(tiny_spec, GF, 0, options=RunOptions(device="cpu"))
    assert a.status == b.status == "ok"
    assert a.final_val_loss == b.final_val_loss
    assert a.val_curve == b.val_curve and a.train_curve == b.train_curve
    assert a.key == b.key


def test_same_seed_is_bitwise_identical_through_the_worker(tiny_spec: Spec, worker: Worker) -> None:
    inproc = train(tiny_spec, GF, 1, options=RunOptions(device="cpu"))
    a = worker.run(make_task(tiny_spec, GF, 1, options=CPU_120))  # same thread count as this process
    b = worker.run(make_task(tiny_spec, GF, 1, options=CPU_120))
    c = run_trial(tiny_spec, GF, 1, options=CPU_120)  # a fresh child
    assert a.status == b.status == c.status == "ok", (a.error, b.error, c.error)
    assert a.final_val_loss == b.final_val_loss == c.final_val_loss == inproc.final_val_loss
    assert a.val_curve == b.val_curve == c.val_curve
    assert isinstance(a, RunResult) and a.key == inproc.key


def test_feeder_gives_the_tracks_batches(tiny_spec: Spec) -> None:
    from arena.runner.feed import BatchFeeder

    track = load_track(tiny_spec)
    feed = BatchFeeder(track, 3, torch.device("cpu"))
    for step in range(4):
        x, y = feed(step)
        ex, ey = track.train_batch(3, step)
        assert torch.equal(x, ex) and torch.equal(y, ey)


def test_execution_options_do_not_touch_cpu_runs(tiny_spec: Spec) -> None:
    """Pinned batches and fused AdamW are CUDA scheduling choices: a CPU run is the same bits and records none."""
    plain = train(tiny_spec, GF, 0, options=RunOptions(device="cpu", execution=Execution(False, False)))
    default = train(tiny_spec, GF, 0, options=RunOptions(device="cpu"))
    assert plain.final_val_loss == default.final_val_loss
    assert "execution" not in default.env


def test_different_seeds_differ(tiny_spec: Spec) -> None:
    a = train(tiny_spec, GF, 0, options=RunOptions(device="cpu"))
    b = train(tiny_spec, GF, 1, options=RunOptions(device="cpu"))
    assert a.final_val_loss != b.final_val_loss
    assert a.train_curve != b.train_curve
    assert a.key != b.key


def test_batches_are_paired_across_variants(tiny_spec: Spec, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variant sees exactly the same training batches at a seed; another seed sees others."""
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    current: list[str] = [""]

    def recording_load_track(spec: Spec, data_flag: str | None = None) -> Any:
        track = load_track(spec, data_flag)
        original = track.train_batch

        def train_batch(seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = original(seed, step)
            seen.setdefault(current[0], []).append((x.clone(), y.clone()))
            return x, y

        track.train_batch = train_batch  # type: ignore[method-assign]
        return track

    monkeypatch.setattr(loop_mod, "load_track", recording_load_track)
    for label, variant, seed in (("gf", GF, 0), ("gpt", builtin("gpt"), 0), ("mamba2_only", builtin("mamba2_only"), 0),
                                 ("gf@1", GF, 1)):
        current[0] = label
        assert train(tiny_spec, variant, seed, options=RunOptions(device="cpu")).status == "ok"
    assert len(seen["gf"]) == tiny_spec.steps
    for other in ("gpt", "mamba2_only"):
        assert len(seen[other]) == len(seen["gf"])
        for (x1, y1), (x2, y2) in zip(seen["gf"], seen[other], strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(seen["gf"][0][0], seen["gf@1"][0][0])
    x, y = seen["gf"][0]
    assert x.shape == (tiny_spec.batch_size, tiny_spec.seq_len)
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one


# -- failures are results --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "action", ["return y * float('nan')", "return y * 1e30 * 1e30"], ids=["nan", "times_1e60"]
)
def test_divergence_is_a_result_and_stops_early(action: str, tmp_path: Path, long_spec: Spec) -> None:
    lv = bomb_variant(tmp_path, action, after=4)
    r = train(long_spec, lv, 0, options=RunOptions(device="cpu"))
    assert r.status == "diverged", (r.status, r.error, r.train_curve)
    assert "non-finite" in (r.error or "")
    assert r.steps_done < long_spec.steps  # stopped early
    assert r.val_curve and r.val_curve[0][0] == 3 and math.isfinite(r.val_curve[0][1])  # the curve before is kept
    assert len(r.train_curve) >= 4 and all(math.isfinite(v) for _, v in r.train_curve)
    assert r.final_val_loss is None


def test_divergence_through_the_worker(tmp_path: Path, long_spec: Spec, worker: Worker) -> None:
    lv = bomb_variant(tmp_path, "return y * float('nan')", after=4)
    r = worker.run(replace(make_task(long_spec, lv, 0, options=CPU_120), policy=False))
    assert r.status == "diverged" and r.steps_done < long_spec.steps and r.val_curve


def test_exception_in_forward_is_crashed_with_traceback(tmp_path: Path, tiny_spec: Spec, worker: Worker) -> None:
    lv = bomb_variant(tmp_path, "raise RuntimeError('fusion exploded on purpose')", after=2)
    r = train(tiny_spec, lv, 0, options=RunOptions(device="cpu"))
    assert r.status == "crashed"
    assert "RuntimeError: fusion exploded on purpose" in (r.error or "")
    assert "Traceback" in (r.error or "") and "forward" in (r.error or "")
    assert r.final_val_loss is None
    r2 = worker.run(replace(make_task(tiny_spec, lv, 0, options=CPU_120), policy=False))
    assert r2.status == "crashed" and "fusion exploded on purpose" in (r2.error or "")


@pytest.mark.parametrize(
    ("action", "expect"),
    [("os._exit(3)", "exited with code 3"), ("os.kill(os.getpid(), signal.SIGKILL)", "SIGKILL")],
    ids=["os_exit", "sigkill"],
)
def test_dying_child_is_crashed_and_the_worker_recovers(
    action: str, expect: str, tmp_path: Path, tiny_spec: Spec, worker: Worker
) -> None:
    lv = bomb_variant(tmp_path, action, after=3)
    first = worker.run(make_task(tiny_spec, GF, 0, options=CPU_120))
    pid_before = worker._proc.pid
    bad = worker.run(replace(make_task(tiny_spec, lv, 0, options=CPU_120), policy=False))
    assert bad.status == "crashed", bad
    assert expect in (bad.error or "")
    assert bad.variant == "bomb" and bad.seed == 0
    assert bad.train_curve  # progress reported before the death is kept
    after = worker.run(make_task(tiny_spec, GF, 0, options=CPU_120))  # the SAME Worker, a new child
    assert worker._proc.pid != pid_before
    assert first.status == after.status == "ok"
    assert after.final_val_loss == first.final_val_loss


def test_hang_is_a_timeout(tmp_path: Path, tiny_spec: Spec, worker: Worker) -> None:
    lv = bomb_variant(tmp_path, "time.sleep(60)", after=3)
    # Start the child first: on a loaded 2-core machine spawning it and importing torch alone can take seconds.
    assert worker.run(make_task(tiny_spec, GF, 0, options=CPU_120)).status == "ok"
    t0 = time.monotonic()
    options = RunOptions(device="cpu", timeout_s=10)
    r = worker.run(replace(make_task(tiny_spec, lv, 0, options=options), policy=False))
    assert r.status == "timeout", r
    assert "timed out after 10 s" in (r.error or "")
    assert r.val_curve and r.val_curve[0][0] == 3  # the eval at step 3 came back before the hang
    assert time.monotonic() - t0 < 30
    ok = worker.run(make_task(tiny_spec, GF, 0, options=CPU_120))  # the worker replaces its child
    assert ok.status == "ok"


def test_pruning_on_first_eval(long_spec: Spec, worker: Worker) -> None:
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> bool:
        events.append(event)
        return event["type"] == "eval"

    r = train(long_spec, GF, 0, options=RunOptions(device="cpu"), on_event=on_event)
    assert r.status == "pruned"
    assert r.steps_done == 3 and r.val_curve == [(3, r.val_curve[0][1])]
    assert [e["type"] for e in events if e["type"] == "eval"] == ["eval"]
    assert r.final_val_loss is None

    events.clear()
    w = worker.run(make_task(long_spec, GF, 0, options=CPU_120), on_event)
    assert w.status == "pruned" and w.steps_done == 3
    assert next(e for e in events if e["type"] == "eval")["step"] == 3


def test_events_report_progress(tiny_spec: Spec) -> None:
    events: list[dict[str, Any]] = []
    train(tiny_spec, GF, 0, options=RunOptions(device="cpu"), on_event=lambda e: events.append(e) and None)
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [3, 6]
    assert all(math.isfinite(e["val_loss"]) for e in evals)
    steps = [e for e in events if e["type"] == "step"]
    assert steps and all(e["tok_s"] > 0 and math.isfinite(e["loss"]) for e in steps)


# -- the result's fields ---------------------------------------------------------------------------------------
def test_result_fields_are_filled(tiny_spec: Spec) -> None:
    r = train(tiny_spec, GF, 0, options=RunOptions(device="cpu"))
    assert r.status == "ok" and r.error is None
    assert r.variant == "gf" and r.variant_sha == GF.sha256 and r.spec_hash == tiny_spec.hash and r.seed == 0
    assert r.hparams == {k: h.default for k, h in GF.variant.hparams.items()}
    assert r.steps_done == tiny_spec.steps
    # parameters
    assert r.params_total and r.params_total > 0
    assert sum(r.params_by_part.values()) == r.params_total
    assert {"rwkv6", "mamba2", "fusion", "ffn", "embed"} <= set(r.params_by_part)
    # backend and environment
    assert set(r.backend) >= {"rwkv6", "mamba2"} and all(r.backend.values())
    assert r.env["torch"] == torch.__version__ and r.env["device"] == "cpu" and r.env["mode"] == "eager"
    assert "git_commit" in r.env
    assert "autotune" not in r.env  # GPU runs record their kernels' autotune digest; the CPU tunes nothing
    here = Path(train_mod.__file__).resolve().parent
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=False)
    if git.returncode == 0:
        assert r.env["git_commit"] == git.stdout.strip()
    # speed and time
    assert r.tokens_per_s and r.tokens_per_s > 0
    assert r.wall_s and r.wall_s > 0 and r.peak_mem_mb and r.peak_mem_mb > 0
    # curves
    assert [s for s, _ in r.val_curve] == [3, 6]
    assert [s for s, _ in r.train_curve] == list(range(tiny_spec.steps))
    assert all(math.isfinite(v) for _, v in r.val_curve + r.train_curve)
    # diagnostics: one per eval, a gate per layer, the gradient ratio of the two pathways
    assert [d["step"] for d in r.diagnostics] == [3, 6]
    for d in r.diagnostics:
        assert len(d["gates"]) == tiny_spec.dims.n_layer
        assert all(0 <= g["mean"] <= 1 for g in d["gates"])
        assert d["grad_ratio"] > 0 and math.isfinite(d["grad_ratio"])
        assert len(d["pathway_norms"]) == tiny_spec.dims.n_layer
    # the metric
    assert r.final_val_loss is not None and math.isfinite(r.final_val_loss)
    assert r.final_val_bpc == pytest.approx(r.final_val_loss / math.log(2), rel=1e-12)
    assert r.final_val_acc is None  # only the mqar track has accuracy
    # a result survives the round trip the worker and the store use
    assert RunResult.from_dict(r.to_dict()) == r


def test_single_mixer_baseline_has_no_gates(tiny_spec: Spec) -> None:
    r = train(tiny_spec, builtin("gpt"), 0, options=RunOptions(device="cpu"))
    assert r.status == "ok"
    assert all(g == {} for g in r.diagnostics[-1]["gates"])
    assert "grad_ratio" not in r.diagnostics[-1]
    assert "attention" in r.params_by_part


def test_checkpoint_is_written(tiny_spec: Spec, tmp_path: Path) -> None:
    ckpt = tmp_path / "gf.pt"
    r = train(tiny_spec, GF, 0, options=RunOptions(device="cpu"), checkpoint_path=str(ckpt))
    assert r.checkpoint_path == str(ckpt) and ckpt.stat().st_size > 0
    saved = torch.load(ckpt, weights_only=True)
    assert saved["meta"]["variant_sha"] == GF.sha256 and saved["meta"]["seed"] == 0


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_an_interrupted_run_is_not_a_result(sig: str, tmp_path: Path, tiny_spec: Spec) -> None:
    """Ctrl-C or a kill of the run is the user's, not the variant's: Worker.run raises, nothing is returned to store
    (before, the run came back as 'crashed: killed by SIGTERM' and a resumed tournament counted it)."""
    from arena.runner.processes import Interrupted

    lv = bomb_variant(tmp_path, f"os.kill(os.getpid(), signal.{sig})", after=2)
    with Worker() as w, pytest.raises(Interrupted):
        w.run(replace(make_task(tiny_spec, lv, 0, options=CPU_120), policy=False))
