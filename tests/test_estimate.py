"""Issue #16, "know before you wait": the estimate of a plan (``arena.orchestration.estimate``, pure) and what the CLI
does with it (``arena.cli.plans.fit``): the line it prints, the per-run limit it derives, the --timeout it refuses."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from arena.cli import plans
from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import PRESETS, Spec
from arena.db.store import Store
from arena.orchestration import estimate as est

SMOKE, PHASE2 = PRESETS["smoke"], PRESETS["phase2"]
A, B = "a" * 64, "b" * 64


def ran(sha: str = A, tok_s: float = 10_000.0, *, spec: Spec = SMOKE, device: str = "cpu", gpu: str | None = None,
        status: str = "ok", threads: int = 2, seed: int = 0, warmup_s: float = 0.1) -> RunResult:
    env: dict[str, Any] = {"device": device, "gpu": gpu, "threads": threads}
    return RunResult("gf", sha, spec.hash, seed, {}, status=status,  # type: ignore[arg-type]
                     tokens_per_s=tok_s, warmup_s=warmup_s, env=env, final_val_loss=3.0, code_digest="c", stack_id="s")


# -- devices and speeds -----------------------------------------------------------------------------------------
def test_device_names_and_matching() -> None:
    assert est.device_of({"device": "cpu"}) == "cpu"
    assert est.device_of({"device": "cuda:0", "gpu": "NVIDIA H200"}) == "NVIDIA H200"
    assert est.device_of({"device": "cuda"}) == "cuda"
    assert est.same_device({"device": "cuda:1", "gpu": "NVIDIA H200"}, "cuda")  # model unknown: any GPU
    assert not est.same_device({"device": "cuda:0", "gpu": "NVIDIA H100"}, "NVIDIA H200")
    assert not est.same_device({"device": "cpu"}, "cuda")


def test_default_speed_is_per_preset_and_device_and_scales_with_size() -> None:
    assert est.default_speed(SMOKE, "cpu").tok_s == 19_000
    assert est.default_speed(PHASE2, "cpu").tok_s == 800
    assert est.default_speed(PHASE2, "NVIDIA H200").tok_s == 300_000  # a GPU by name is a cuda device
    wider = PHASE2.derive(d_model=256)  # 4× the work per token
    assert est.default_speed(wider, "cpu").tok_s == pytest.approx(200)
    assert est.default_speed(PHASE2.derive(steps=50), "cpu").tok_s == 800  # steps do not change the speed


def test_recorded_speed_is_the_median_of_ok_runs_on_this_device() -> None:
    runs = [ran(tok_s=1000), ran(tok_s=3000), ran(tok_s=2000), ran(tok_s=99, status="crashed"),
            ran(tok_s=50_000, device="cuda:0", gpu="NVIDIA H200")]
    speed = est.recorded_speed(runs, "cpu", 1.5)
    assert speed is not None and speed.tok_s == 2000 and speed.recorded == 3 and speed.threads == 2
    assert est.recorded_speed(runs, "NVIDIA H200", 15.0).tok_s == 50_000  # type: ignore[union-attr]
    assert est.recorded_speed(runs, "NVIDIA H100", 15.0) is None
    assert est.recorded_speed([ran(tok_s=0)], "cpu", 1.5) is None  # no speed recorded: no evidence


def test_one_run_of_smoke_on_the_cpu_matches_what_was_measured() -> None:
    # The smoke tournament (33 runs) took 73 s on 2 cores: about 2.2 s a run, training, evals and overhead.
    seconds = est.run_seconds(SMOKE, est.default_speed(SMOKE, "cpu"))
    assert 1.5 < seconds < 3.5
    fewer = est.run_seconds(SMOKE, est.default_speed(SMOKE, "cpu"), threads=1)
    assert fewer > seconds  # half the threads it was measured with: slower (never assumed faster with more)
    assert est.run_seconds(SMOKE, est.default_speed(SMOKE, "cpu"), threads=16) == seconds


def test_eval_tokens_count_the_final_evaluation_twice() -> None:
    per_batch = SMOKE.tokens_per_step
    assert est.eval_tokens(SMOKE) == (40 // 10) * 4 * per_batch + 2 * 16 * per_batch
    full = PHASE2.final_eval_batches == 0  # every val window: sized from tinyshakespeare's val split
    assert full and est.eval_tokens(PHASE2) > 10 * 8 * PHASE2.tokens_per_step


# -- the estimate of a plan ---------------------------------------------------------------------------------------
def test_a_variant_with_runs_uses_its_own_speed_others_the_typical_one() -> None:
    runs = [ran(A, 20_000, seed=s) for s in range(3)] + [ran(B, 5_000, seed=s) for s in range(3)]
    plan = est.estimate(SMOKE, [A, A, B, "c" * 64], runs, "cpu", workers=1)
    assert plan.runs == 4 and plan.recorded == 6 and plan.sure
    slow = est.run_seconds(SMOKE, est.Speed(5_000, 0.1, 1.5, 3, 2))
    assert plan.run_s == pytest.approx(slow)  # B is the slowest
    assert plan.total_s > 3 * est.run_seconds(SMOKE, est.Speed(20_000, 0.1, 1.5, 3, 2))


def test_workers_divide_the_total_up_to_one_per_variant() -> None:
    one = est.estimate(SMOKE, [A, A, B, B], [], "cpu", workers=1)
    two = est.estimate(SMOKE, [A, A, B, B], [], "cpu", workers=2)
    many = est.estimate(SMOKE, [A, A, B, B], [], "cpu", workers=8)
    assert two.total_s == pytest.approx(one.total_s / 2)
    assert many.total_s == pytest.approx(two.total_s)  # a variant's runs go one after another in one worker
    trials = est.estimate(SMOKE, [A] * 4, [], "cpu", workers=4, parallel=4)  # tune: trials in parallel
    assert trials.total_s == pytest.approx(one.total_s / 4)


def test_limit_long_and_what_a_timeout_must_allow() -> None:
    phase2 = est.estimate(PHASE2, [A] * 55, [], "cpu")
    assert not phase2.sure and phase2.run_s > 30 * 60  # a rough default: 800 tok/s
    assert phase2.long and phase2.limit_s == pytest.approx(3 * phase2.run_s)
    smoke = est.estimate(SMOKE, [A] * 3, [], "cpu")
    assert not smoke.long and smoke.limit_s == est.MIN_LIMIT_S
    gpu = est.estimate(PHASE2, [A] * 5000, [], "NVIDIA H200")
    assert gpu.total_s > est.LONG_S and not gpu.long  # long, but not on a CPU: no warning
    assert est.estimate(SMOKE, [], [], "cpu").run_s == 0


def test_a_timeout_the_plan_cannot_meet_is_refused_with_the_fix() -> None:
    plan = est.estimate(PHASE2, [A], [], "cpu")
    with pytest.raises(ArenaError) as info:
        est.check_timeout(plan, 60, "--timeout", "phase2")
    text = str(info.value)
    assert text.startswith("--timeout 60:") and "\n" not in text
    assert f"--timeout {int(plan.limit_s) + 1}" in text or f"--timeout {int(plan.limit_s)}" in text
    assert "leave --timeout out" in text and "--preset smoke" in text and "rough default" in text
    est.check_timeout(plan, plan.run_s, "--timeout")  # within the default's 4× uncertainty: allowed
    est.check_timeout(est.estimate(PHASE2, [], [], "cpu"), 1, "--timeout")  # nothing to run: nothing to refuse
    recorded = est.estimate(SMOKE, [A], [ran(A, 100.0)], "cpu")  # slow, and known to be
    with pytest.raises(ArenaError, match=r"--trial-timeout 10: .*recorded here") as info:
        est.check_timeout(recorded, 10, "--trial-timeout", "smoke")
    assert "--preset smoke" not in str(info.value)  # it is smoke already


def test_evidence_reads_runs_of_every_spec_with_the_same_model_shape(tmp_path: Path) -> None:
    other_steps = SMOKE.derive(steps=100)
    other_shape = SMOKE.derive(d_model=64)
    with Store(f"sqlite:///{tmp_path / 'arena.db'}") as store:
        for spec, tok_s in [(SMOKE, 1000.0), (other_steps, 2000.0), (other_shape, 9999.0)]:
            store.add_spec(spec)
            store.record_run(ran(tok_s=tok_s, spec=spec))
            store.record_run(ran(tok_s=1.0, spec=spec, status="crashed", seed=1))
        found = sorted(r.tokens_per_s or 0 for r in est.evidence(store, SMOKE))
    assert found == [1000.0, 2000.0]


def test_durations_and_rates_read_as_people_say_them() -> None:
    assert [est.duration(s) for s in (0.2, 40, 89, 600, 3600 + 5 * 60)] == ["1 s", "40 s", "89 s", "10 min",
                                                                            "1 h 05 min"]
    assert [est.rate(x) for x in (800, 1946, 19_000, 310_000, 1_250_000)] == ["800", "1.9K", "19K", "310K", "1.2M"]


# -- the CLI's use of it ----------------------------------------------------------------------------------------
def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200), out


def test_fit_prints_the_plan_and_derives_the_limit_when_none_was_given() -> None:
    console, out = _console()
    options = plans.fit(console, None, SMOKE, [A] * 33, RunOptions(device="cpu", timeout_s=3600), "cpu", None)
    assert options.timeout_s == est.MIN_LIMIT_S  # not the placeholder 3600
    line = out.getvalue()
    assert line.startswith("estimate: 33 runs × 40 steps at ~19K tok/s on cpu (rough default) ≈ 76 s on 1 worker")
    assert "limit 10 min a run (3× estimate; --timeout sets it)" in line and len(line.splitlines()) == 1


def test_fit_keeps_a_given_limit_and_warns_when_long_on_a_cpu() -> None:
    console, out = _console()
    options = plans.fit(console, None, PHASE2, [A] * 55, RunOptions(device="cpu"), "cpu", 9000.0)
    assert options.timeout_s == 9000.0
    lines = out.getvalue().splitlines()
    assert "limit 2 h 30 min a run (--timeout)" in lines[0]
    assert len(lines) == 2 and "on the CPU" in lines[1] and "--preset smoke" in lines[1]


def test_fit_refuses_before_printing_and_allows_a_decision_its_slow_runs() -> None:
    console, out = _console()
    with pytest.raises(ArenaError, match="--timeout 5:"):
        plans.fit(console, None, PHASE2, [A], RunOptions(device="cpu"), "cpu", 5.0)
    assert out.getvalue() == ""
    runs = [ran(A, 20_000), ran(B, 500)]  # nothing of B to run now, but a decision may train it
    options = plans.fit(console, None, SMOKE, [A], RunOptions(device="cpu"), "cpu", None, later=[B])
    assert options.timeout_s == est.MIN_LIMIT_S
    with Store("sqlite://") as store:
        store.add_spec(SMOKE)
        for r in runs:
            store.record_run(r)
        slow = est.run_seconds(SMOKE, est.Speed(500, 0.1, 1.5, 1, 2))
        options = plans.fit(console, store, SMOKE, [A], RunOptions(device="cpu"), "cpu", None, later=[B])
    assert options.timeout_s == pytest.approx(max(est.MIN_LIMIT_S, 3 * slow))


def test_nothing_to_run_prints_nothing() -> None:
    console, out = _console()
    plans.fit(console, None, SMOKE, [], RunOptions(device="cpu"), "cpu", None)
    assert out.getvalue() == ""


def test_a_pack_is_estimated_from_runs_of_its_own_size_and_else_assumed_to_gain_nothing() -> None:
    solo = [ran(A, tok_s=10_000.0, seed=s) for s in range(3)]
    packed = [ran(A, tok_s=5_000.0, seed=s) for s in range(3)]
    for r in packed:
        r.env["pack"] = {"size": 3, "index": r.seed}
    alone = est.estimate(SMOKE, [A] * 6, solo, "cpu")
    # No runs recorded at pack 3: a pack costs its 3 runs one after another, and its limit covers them.
    guess = est.estimate(SMOKE, [A] * 6, solo, "cpu", pack=3)
    assert guess.total_s == pytest.approx(alone.total_s) and guess.run_s == pytest.approx(3 * alone.run_s)
    # Runs recorded at pack 3 (a member's speed): a pack takes one member's time and trains 3 runs.
    seen = est.estimate(SMOKE, [A] * 6, solo + packed, "cpu", pack=3)
    member = est.estimate(SMOKE, [A] * 6, [ran(A, tok_s=5_000.0)], "cpu")
    assert seen.run_s == pytest.approx(member.run_s) and seen.total_s == pytest.approx(member.total_s / 3)
    # A packed member's speed never stands for a run alone.
    assert est.estimate(SMOKE, [A] * 6, solo + packed, "cpu").tok_s == 10_000.0
