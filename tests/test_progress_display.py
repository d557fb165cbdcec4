"""Issue #16, "a tool that tells you what it is doing": the progress displays (``arena.cli.progress``) live on a
terminal and as plain lines elsewhere, the phases that used to be silent, and tables that fit 80 columns.

The displays are driven with hand-made events (no training) except in the two end-to-end tests: one in-process
(output not a TTY: plain lines) and one under a pseudo-terminal (rich's live display, within its first seconds).
"""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from rich.console import Console
from test_cli import arena

from arena.cli import admin, render
from arena.cli.progress import PlainLines, TournamentProgress, TrialProgress, clock, single_run_progress, status
from arena.core.result import RunResult
from arena.core.spec import PRESETS
from arena.orchestration.entries import Entry, Job
from arena.orchestration.leaderboard import Board, League, Row


def job(name: str, seed: int) -> Job:
    return Job(cast(Entry, SimpleNamespace(name=name)), seed)


def result(j: Job, status: str = "ok", loss: float | None = 3.1234, error: str | None = None) -> RunResult:
    return RunResult(j.entry.name, "a" * 64, "h", j.seed, {}, status=status, final_val_loss=loss,  # type: ignore[arg-type]
                     error=error)


def plain() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=160), out  # a file, not a terminal: what CI logs, ssh and device calls get


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=160, force_terminal=True), out


def steps(display: TournamentProgress, slot: int, j: Job, upto: int, every: int = 5) -> None:
    for s in range(every, upto + 1, every):
        display.on_event(slot, j, {"type": "step", "step": s, "loss": 2.0, "tok_s": 310_000.0, "seed": j.seed})


# -- the plan's bar and the worker lines --------------------------------------------------------------------------
def test_the_overall_bar_counts_the_steps_of_running_runs() -> None:
    console, _ = terminal()
    a0, b0 = job("gf", 0), job("cp", 0)
    with TournamentProgress(console, [a0, b0, job("gf", 1), job("cp", 1)], 100, workers=2) as display:
        overall, worker0, worker1 = display.progress.tasks
        steps(display, 0, a0, 50)
        steps(display, 1, b0, 20)
        assert overall.completed == 70 and overall.total == 400  # not 0 until a run finishes: it moves
        display.on_done(0, a0, result(a0))
        assert overall.completed == 100 + 20
        assert "1/4 runs" in overall.fields["info"]
        assert worker0.fields["info"] == "idle" and worker1.description.strip() == "cp seed 0"


def test_each_worker_line_shows_the_phase_that_arrives() -> None:
    console, _ = terminal()
    a0 = job("gf", 0)
    with TournamentProgress(console, [a0], 40, workers=1) as display:
        line = display.progress.tasks[1]
        for phase in ("importing", "compiling", "a-phase-nobody-planned"):
            display.on_event(0, a0, {"type": "phase", "phase": phase, "seed": 0})
            assert line.fields["info"] == phase and line.description.strip() == "gf seed 0"
        display.on_event(0, a0, {"type": "phase", "phase": "training"})
        steps(display, 0, a0, 10)
        assert line.completed == 10 and line.fields["info"].startswith("training · loss 2.0000")
        display.on_event(0, a0, {"type": "phase", "phase": "checking"})
        assert line.fields["info"] == "checking" and line.completed == 10


def test_a_pack_shows_its_seeds_and_the_next_seed_replaces_a_finished_one() -> None:
    console, _ = terminal()
    s0, s1, s2 = job("gf", 0), job("gf", 1), job("gf", 2)
    with TournamentProgress(console, [s0, s1, s2], 20, workers=1) as display:
        line = display.progress.tasks[1]
        for s in (5, 10):  # a pack: its members' events interleave
            for j in (s0, s1):
                display.on_event(0, j, {"type": "step", "step": s, "loss": 2.0, "tok_s": 1.0, "seed": j.seed})
        assert line.description.strip() == "gf seeds 0,1" and line.completed == 10
        steps(display, 0, s0, 20)
        steps(display, 0, s1, 20)
        steps(display, 0, s2, 5)  # trained to the end, s0 and s1 wait for their check: the line is s2's
        assert line.description.strip() == "gf seed 2" and line.completed == 5
        assert display.progress.tasks[0].completed == 45


def test_off_a_terminal_progress_is_plain_lines() -> None:
    console, out = plain()
    a0, a1 = job("gf", 0), job("gf", 1)
    with TournamentProgress(console, [a0, a1], 500, workers=1) as display:
        for phase in ("importing", "compiling", "training"):
            display.on_event(0, a0, {"type": "phase", "phase": phase})
        display.on_event(0, a0, {"type": "eval", "step": 50, "val_loss": 2.5})
        steps(display, 0, a0, 500, every=10)
        display.on_done(0, a0, result(a0))
        display.on_done(0, a1, result(a1, "timeout", None, "timed out after 600 s (at step 12)"))
    lines = out.getvalue().splitlines()
    assert "gf seed 0: compiling" in lines and not any(ln.endswith(("importing", "training")) for ln in lines)
    progress = [ln for ln in lines if ln.startswith("gf seed 0: step")]
    assert [int(re.findall(r"step (\d+)/", ln)[0]) for ln in progress] == list(range(50, 501, 50))  # every 10%
    assert re.fullmatch(r"gf seed 0: step 250/500 loss 2\.00 val 2\.500 310K tok/s ETA \d+:\d\d", progress[4])
    done = [ln for ln in lines if "val 3.1234" in ln or "timeout" in ln]
    assert "1/2 runs, ETA" in done[0] and "2/2 runs, ETA" in done[1] and "timed out after 600 s" in done[1]
    assert not any("━" in ln for ln in lines)  # no bar frames in a log


def test_a_single_run_prints_plain_lines_off_a_terminal() -> None:
    console, out = plain()
    with single_run_progress(console, "gf seed 3", 40) as on_event:
        on_event({"type": "phase", "phase": "compiling"})
        for s in (10, 20, 30, 40):
            on_event({"type": "step", "step": s, "loss": 2.5, "tok_s": 19_000.0})
    lines = out.getvalue().splitlines()
    assert lines[0] == "gf seed 3: compiling"
    assert [ln.split(" loss")[0] for ln in lines[1:]] == [f"gf seed 3: step {s}/40" for s in (10, 20, 30, 40)]


def test_status_is_a_spinner_on_a_terminal_and_lines_elsewhere() -> None:
    console, out = plain()
    with status(console, "deciding the champion of league default") as say:
        say("still deciding")
    assert out.getvalue().splitlines()[:2] == ["deciding the champion of league default", "still deciding"]
    assert out.getvalue().splitlines()[2].startswith("done in 0:0")
    console, out = terminal()
    with status(console, "deciding [the] champion"):  # text, not markup
        time.sleep(0.3)
    assert "deciding [the] champion" in out.getvalue()


def test_tuning_prints_one_line_per_trial_off_a_terminal() -> None:
    console, out = plain()
    with TrialProgress(console, 3) as progress:
        progress.start("gf@smoke", "optuna.journal")
        for n, (state, value) in enumerate([("COMPLETE", 3.2), ("PRUNED", None), ("FAIL", None)]):
            progress.on_trial(SimpleNamespace(number=n, state=state, value=value, done=n + 1, best_value=3.2,
                                              best_trial=0, error="boom" if state == "FAIL" else None))
    lines = out.getvalue().splitlines()
    assert lines[0] == "study gf@smoke in optuna.journal"
    assert lines[1].startswith("trial 1/3: #0 complete 3.2000 · best 3.2000 (#0) · ETA")
    assert lines[2].startswith("trial 2/3: #1 pruned · best") and "trial #2 failed: boom" in lines
    assert clock(None) == "?" and clock(75) == "1:15" and clock(3725) == "1:02:05"


def test_plain_lines_name_every_run_of_a_label_once_per_tenth() -> None:
    console, out = plain()
    lines = PlainLines(console, 7)  # a run shorter than ten steps prints each step it reports
    for s in range(1, 8):
        lines.event("x seed 0", {"type": "step", "step": s, "loss": 1.0, "tok_s": 5.0})
    assert len(out.getvalue().splitlines()) == 7


# -- tables at 80 columns ------------------------------------------------------------------------------------------
VERDICT = ("not a candidate: mean(d) < 0.5·δ = 0.01111; mean(d)=-0.0009237, p=0.001905 on seeds 0–4 (selection: "
           "the best 3 of 10)")


def board() -> Board:
    rows = []
    names = ["gf", "gf_mh@tuned-30", "gru_arbiter", "rwkv6_only", "mamba2_only", "unmatched_one"]
    for i, name in enumerate(names):
        mean = 1.4123 + i / 1000
        rows.append(Row(
            name=name, kind="fusion", league="default", variant_sha="s", hparams={},
            losses={s: mean for s in range(5)}, statuses=Counter(ok=5 - (i == 4), crashed=int(i == 4)),
            missing=[], extra={7: 1.5} if i == 2 else {}, params=3_089_760 + i,
            params_target=None if i == 5 else 3_089_760,
            tok_s=310_000.0 - i, peak_mb=None, mean=mean, ci=(mean - 0.0123, mean + 0.0123),
            delta=None if i == 0 else i / 1000, delta_ci=None if i == 0 else (i / 1000 - 0.0021, i / 1000 + 0.0021),
            verdict="champion" if i == 0 else VERDICT, is_champion=i == 0, rank=i + 1,
        ))
    spec = PRESETS["phase2"]
    return Board(spec.hash, spec, "c" * 24, "s" * 12, {"device": "cuda", "gpu": "NVIDIA H200"}, spec.seeds,
                 [League("default", rows, "gf", True, 1)], 0.0042, 0, {}, [])


def rendered(renderable: Any, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100, 120, 200])
def test_the_leaderboard_fits_the_width_and_cuts_no_number_or_name(width: int) -> None:
    b = board()
    text = rendered(render.table(b, width), width)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= width
    assert "…" not in text
    for r in b.leagues[0].rows:
        assert any(r.name in ln for ln in lines), r.name
        assert any(f"{r.mean:.4f}" in ln for ln in lines)
        if r.delta is not None:
            assert any(f"{r.delta:+.4f}" in ln for ln in lines)
    for word in VERDICT.split():  # the verdict wraps between words, never through a number
        assert any(word in ln for ln in lines), word
    if width >= 200:
        assert "[1.4000, 1.4246]" in text and "3,089,760 (+0.00%)" in text  # the full table
    else:
        assert "1.4123 ±0.0123" in text and "≠" in text  # the compact one: ±, marks beside the name


def test_the_champion_history_wraps_its_reason_between_numbers() -> None:
    message = ("PROMOTED gf_mh vs champion gf: mean(d)=0.01074 ≥ δ=0.005, p=0.001905 < α=0.01 on fresh seeds 5–9; "
               "family of 3 candidates (sequence)")
    row = SimpleNamespace(evidence={"message": message, "family": {"confirmations": [
        {"name": "gf_mh", "mean": 0.01074, "p": 0.001905}]}}, reason="promoted", by_default=False, promoted=True,
        decided_at=datetime(2026, 12, 1, 16, 11), spec_hash="7140455437bec40a", league="tuned-30",
        challenger_name="gf_mh@tuned-30", champion_name="gf@tuned-30")
    for width in (80, 120, 200):
        text = rendered(admin._history_table([row], width), width)
        lines = text.splitlines()
        assert max(len(ln) for ln in lines) <= width and "…" not in text
        for word in message.split():
            assert any(word in ln for ln in lines), (width, word)
        assert any("gf_mh@tuned-30" in ln for ln in lines)


# -- end to end ----------------------------------------------------------------------------------------------------
def test_a_tournament_off_a_terminal_prints_its_plan_and_plain_progress(home: Path, tiny_flags: list[str]) -> None:
    r = arena("tournament", *tiny_flags, "--variants", "gf", "--device", "cpu")
    assert r.code == 0, r.err + r.out
    lines = r.out.splitlines()
    assert lines[0].startswith("checking the entries")  # a word before the entries' check, not after it
    plan = next(ln for ln in lines if ln.startswith("estimate:"))
    assert plan.startswith("estimate: 3 runs × 6 steps at ~") and "limit 10 min a run" in plan
    assert any(ln.startswith("gf seed 0: step 3/6 loss") and "tok/s ETA" in ln for ln in lines)
    assert any(ln.startswith("gf seed 2: step 6/6") for ln in lines)
    assert any("1/3 runs, ETA" in ln for ln in lines) and any("3/3 runs, ETA" in ln for ln in lines)
    deciding = next(i for i, ln in enumerate(lines) if ln.startswith("deciding the champion of league default"))
    assert not any("━" in ln for ln in lines[:deciding])  # no bar frames in a log (the leaderboard comes after)


@pytest.fixture
def home(_isolated_arena: Path) -> Path:
    return _isolated_arena


@pytest.mark.slow
def test_a_tournament_on_a_terminal_shows_progress_within_seconds(tmp_path: Path) -> None:
    """Under a pseudo-terminal (what a person at a shell has): the plan and the live bar appear within the first
    seconds, long before the tournament ends."""
    cmd = [sys.executable, "-P", "-m", "arena.cli", "tournament", "--preset", "smoke", "--variants", "gf",
           "--seeds", "2", "--steps", "400", "--device", "cpu"]
    env = {**os.environ, "COLUMNS": "120", "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    master, slave = pty.openpty()
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                            close_fds=True)
    os.close(slave)
    seen: dict[str, float] = {}
    text = ""
    try:
        while time.monotonic() - t0 < 300:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536).decode("utf-8", "replace")
                except OSError:  # the child closed the terminal: it is done
                    break
                text += chunk
                for key, pattern in [("first", "checking the entries"), ("plan", "estimate:"), ("bar", "worker 0"),
                                     ("run", "gf seed 0"), ("end", "first champion")]:
                    if key not in seen and pattern in text:
                        seen[key] = time.monotonic() - t0
            elif proc.poll() is not None:
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        os.close(master)
    ended = time.monotonic() - t0
    assert proc.returncode == 0, text[-3000:]
    assert "\x1b[" in text  # rich drew a live display (cursor moves), not plain lines
    # A word within seconds (the entries' check runs first: ≈ 10 s on 2 contended cores), then the plan and the bar.
    assert seen.get("first", 99) < 10, (seen, text[-2000:])
    assert seen.get("plan", 999) < 60 and seen.get("bar", 999) < 60, (seen, text[-2000:])
    assert seen["run"] < seen["end"] and seen["bar"] < ended - 3, seen  # progress long before the end
