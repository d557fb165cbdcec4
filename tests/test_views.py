"""What ``arena show``, ``run --json``, ``--version``, ``doctor``, ``--help`` and ``champions`` print (issue #16).

The comparison figures are checked on their drawn data against numbers computed by hand here: only runs of the
leaderboard's basis on the tournament seeds count; a run of other code and a one-off seed are stored beside them
with absurd losses, so a figure that used them would show it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from boards import crown_by_default
from matplotlib.collections import PathCollection
from test_cli import COMMAND_PATHS, arena, assert_one_line_error
from typer.testing import CliRunner

from arena.cli.app import app
from arena.cli.compare import compare
from arena.cli.plots import caption as caption_of
from arena.cli.plots import comparison_figure
from arena.core.result import RunResult
from arena.core.spec import PRESETS, Spec
from arena.core.stack import Basis
from arena.db.store import DecisionRecord, Store
from arena.orchestration.entries import Entry
from arena.orchestration.execute import register
from arena.runner.loader import builtin

SPEC: Spec = PRESETS["smoke"].derive(seeds=(0, 1, 2))
BASIS = Basis.of("c0de", {"device": "cpu"})
STALE = Basis.of("01d0", {"device": "cpu"})  # other code: never compared
T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)
LOSSES = {
    "gf": {0: 3.00, 1: 3.10, 2: 3.20},  # the champion (by default)
    "cp": {0: 2.90, 1: 3.05, 2: 3.05},
    "hy": {0: 3.30, 1: 3.40, 2: 3.50},
}


def _val_curve(final: float) -> list[tuple[int, float]]:
    """Intermediate evals on a part of the val split: above the final loss, so the two visibly differ."""
    return [(3, final + 0.5), (6, final + 0.1)]


def _record(store: Store, entry: Entry, seed: int, loss: float, basis: Basis = BASIS) -> int:
    return store.record_run(RunResult(
        variant=entry.name, variant_sha=entry.loaded.sha256, spec_hash=SPEC.hash, seed=seed,
        hparams=entry.hparams.to_dict(), final_val_loss=loss, val_curve=_val_curve(loss),
        train_curve=[(0, 4.2), (1, 4.0 + seed / 100)], steps_done=6, code_digest=basis.code, stack_id=basis.stack,
        env={"device": "cpu"}, params_total=51_864, params_target=51_864,
    ))


@pytest.fixture
def store(_isolated_arena: Path) -> Any:
    """The default store of this test's arena home: gf crowned by default in a completed tournament, cp and hy on
    the tournament seeds, plus cp on another basis (9.0) and on a one-off seed 7 (1.0)."""
    s = Store(Store.default_url())
    entries = {name: Entry.of(builtin(name)) for name in LOSSES}
    register(s, SPEC, entries.values())
    for name, losses in LOSSES.items():
        for seed, loss in losses.items():
            _record(s, entries[name], seed, loss)
    _record(s, entries["cp"], 0, 9.0, STALE)
    _record(s, entries["cp"], 7, 1.0)
    gf = entries["gf"]
    crown_by_default(s, SPEC, gf, BASIS, sorted(LOSSES))
    yield s
    s.close()


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    m = sum(values) / n
    half = T_975_2 * math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) / math.sqrt(n)
    return m, m - half, m + half


def _errorbars(ax: Any) -> list[tuple[float, float, float]]:
    """(mean, low, high) of every error bar drawn, left to right."""
    out = []
    for container in ax.containers:
        data_line, _, (bars,) = container.lines
        (_, lo), (_, hi) = bars.get_segments()[0]
        out.append((float(data_line.get_ydata()[0]), float(lo), float(hi)))
    return out


# -- the comparison ----------------------------------------------------------------------------------------------
def test_a_comparison_holds_only_the_basis_and_the_tournament_seeds(store: Store) -> None:
    comp = compare(store, SPEC.hash, ["cp", "hy", "cp"])
    assert [s.name for s in comp.series] == ["cp", "hy"]
    cp = comp.series[0]
    assert cp.losses == LOSSES["cp"]  # not 9.0 (other code), not seed 7
    assert comp.reference.name == "gf" and comp.reference_role == "champion"
    assert compare(store, SPEC.hash, ["cp"], vs="hy").reference_role == "--vs"


def test_the_curves_figure_draws_the_seed_mean_and_band_and_explains_the_final_loss(store: Store) -> None:
    comp = compare(store, SPEC.hash, ["cp", "hy"])
    fig = comparison_figure(comp, "curves")
    (ax,) = fig.axes
    assert SPEC.label in ax.get_title() and "code c0de" in ax.get_title() and "min–max over seeds" in ax.get_title()
    lines = {line.get_label(): line for line in ax.get_lines()}
    mean = lines["cp val (mean of 3 seeds)"]
    assert list(mean.get_xdata()) == [3, 6]
    assert list(mean.get_ydata()) == pytest.approx([3.0 + 0.5, 3.0 + 0.1])  # mean(2.90, 3.05, 3.05) + offsets
    final = lines["cp final val loss (mean)"]
    assert list(final.get_xdata()) == [6] and list(final.get_ydata()) == pytest.approx([3.0])
    band = ax.collections[0].get_paths()[0].vertices  # cp's min–max band
    for step, lo, hi in ((3, 2.90 + 0.5, 3.05 + 0.5), (6, 2.90 + 0.1, 3.05 + 0.1)):
        ys = band[band[:, 0] == step][:, 1]
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
    caption = fig.texts[0].get_text()
    assert f"the first {SPEC.eval_batches}×{SPEC.batch_size} windows (eval_batches={SPEC.eval_batches})" in caption
    assert f"(final_eval_batches={SPEC.final_eval_batches})" in caption  # smoke: a fixed part of the split too
    assert "the last curve point and the reported final loss differ" in caption and "seeds 0,1,2 only" in caption
    whole = dataclasses.replace(comp, spec=SPEC.derive(final_eval_batches=0))
    assert "covers the whole val split (final_eval_batches=0: every window)" in caption_of(whole)


def test_the_means_figure_draws_each_mean_with_its_95_ci(store: Store) -> None:
    fig = comparison_figure(compare(store, SPEC.hash, ["cp", "hy"]), "means")
    (ax,) = fig.axes
    assert _errorbars(ax) == [pytest.approx(_mean_ci(list(LOSSES[n].values()))) for n in ("cp", "hy")]
    assert "95% CI" in ax.get_title()


def test_the_paired_figure_draws_the_differences_vs_the_champion_or_vs(store: Store) -> None:
    fig = comparison_figure(compare(store, SPEC.hash, ["cp", "hy"]), "paired")
    (ax,) = fig.axes
    by_hand = [_mean_ci([LOSSES[n][s] - LOSSES["gf"][s] for s in (0, 1, 2)]) for n in ("cp", "hy")]
    assert _errorbars(ax) == [pytest.approx(v) for v in by_hand]
    assert "vs gf (champion)" in ax.get_title()
    dots = next(c for c in ax.collections if isinstance(c, PathCollection)).get_offsets()[:, 1]  # cp − gf per seed
    assert sorted(dots) == pytest.approx(sorted([-0.10, -0.05, -0.15]))
    fig = comparison_figure(compare(store, SPEC.hash, ["cp", "gf"], vs="hy"), "paired")
    ((cp_mean, _, _), (gf_mean, _, _)) = _errorbars(fig.axes[0])
    assert cp_mean == pytest.approx(3.0 - 3.4) and gf_mean == pytest.approx(3.1 - 3.4)


def test_show_several_variants_writes_the_figure(store: Store, tmp_path: Path) -> None:
    for kind in ("curves", "means", "paired"):
        png = tmp_path / f"{kind}.png"
        r = arena("show", "cp", "hy", "--plot", str(png), "--plot-kind", kind)
        assert r.code == 0, r.err
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"wrote {png}" in r.out.replace("\n", "")
    assert_one_line_error(arena("show", "cp", "--plot", str(tmp_path / "x.png"), "--plot-kind", "bars"),
                          "--plot-kind", "curves, means, paired")
    assert_one_line_error(arena("show", "cp", "--plot", str(tmp_path / "x.txt")), "--plot", ".png")
    assert_one_line_error(arena("show", "cp", "--plot", str(tmp_path / "no" / "x.png")), "does not exist")
    assert_one_line_error(arena("show", "cp", "#1"), "not both")
    assert_one_line_error(arena("show", "gf", "--plot", str(tmp_path / "p.png"), "--plot-kind", "paired"),
                          "besides the reference gf")
    assert not list(tmp_path.glob("x.*")) and not (tmp_path / "p.png").exists()


# -- export ---------------------------------------------------------------------------------------------------------
def test_show_json_is_json_only_with_every_run_flagged(store: Store, tmp_path: Path) -> None:
    csv_file = tmp_path / "c.csv"
    r = arena("show", "cp", "--json", "--curves", str(csv_file))
    assert r.code == 0, r.err
    data = json.loads(r.out)  # the whole of stdout: the "wrote" note went to stderr
    assert "wrote" in r.err and data["spec_hash"] == SPEC.hash and data["basis"]["code_digest"] == "c0de"
    runs = {(x["seed"], x["code_digest"]): x for x in data["runs"]}
    assert set(runs) == {(0, "c0de"), (1, "c0de"), (2, "c0de"), (0, "01d0"), (7, "c0de")}
    assert runs[(0, "01d0")]["on_basis"] is False and runs[(7, "c0de")]["tournament_seed"] is False
    assert runs[(1, "c0de")]["on_basis"] and runs[(1, "c0de")]["tournament_seed"]
    assert [x for point in runs[(1, "c0de")]["val_curve"] for x in point] == pytest.approx([3, 3.55, 6, 3.15])
    assert "diagnostics" in runs[(1, "c0de")] and isinstance(runs[(1, "c0de")]["id"], int)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_show_curves_writes_every_point_of_every_run(store: Store, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"curves{suffix}"
    r = arena("show", "cp", "--curves", str(out))
    assert r.code == 0, r.err
    text = out.read_text()
    rows = json.loads(text) if suffix == ".json" else list(csv.DictReader(io.StringIO(text)))
    if suffix == ".csv":
        assert text.splitlines()[0] == "run_id,variant,seed,split,step,loss"
    assert len(rows) == 5 * (2 + 2 + 1)  # 5 runs of cp: 2 train points, 2 val points, 1 final each
    seed1 = [x for x in rows if int(x["seed"]) == 1]
    assert {(x["split"], int(x["step"]), round(float(x["loss"]), 6)) for x in seed1} == {
        ("train", 0, 4.2), ("train", 1, 4.01), ("val", 3, 3.55), ("val", 6, 3.15), ("final", 6, 3.05)}
    assert_one_line_error(arena("show", "cp", "--curves", str(tmp_path / "c.xlsx")), "--curves", ".csv")


def test_run_json_is_json_only_fresh_and_memoized(home: Path, tiny_flags: list[str]) -> None:
    for attempt in ("fresh", "memoized"):
        r = arena("run", "gf", "--seed", "0", *tiny_flags, "--device", "cpu", "--json")
        assert r.code == 0, r.err
        data = json.loads(r.out)  # nothing before or after the record on stdout
        assert data["variant"] == "gf" and data["status"] == "ok", attempt
    assert "memoized: run #1" in r.err
    shown = arena("run", "gf", "--seed", "0", *tiny_flags, "--device", "cpu")
    assert shown.code == 0 and "memoized: run #1" in shown.out
    assert "final val loss" in shown.out and "val curve" in shown.out  # the stored result, printed in full


@pytest.fixture
def home(_isolated_arena: Path) -> Path:
    return _isolated_arena


# -- what arena is, and where --------------------------------------------------------------------------------------
def test_version_prints_the_installed_version() -> None:
    r = arena("--version")
    assert r.code == 0 and r.out == f"arena {version('arena')}\n"


def _doctor(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ARENA_", "XDG_", "TRITON_"))}
    sandbox = {"HOME": str(tmp_path / "user"), "ARENA_HOME": str(tmp_path / "home"),
               "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-P", "-m", "arena.cli", "doctor"], capture_output=True, text=True,
                          env=clean | sandbox | env, timeout=300)


def test_doctor_shows_store_home_data_and_version_and_creates_nothing(tmp_path: Path, corpus: Path) -> None:
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    p = _doctor(sandbox)
    assert p.returncode == 0, p.stderr
    out = _flat(p.stdout)
    assert f"arena {version('arena')} store" in out
    assert f"store sqlite:///{sandbox / 'home' / 'arena.db'} (does not exist yet" in out
    assert f"arena home {sandbox / 'home'} data" in out
    assert f"data not found: ARENA_DATA is not set and {sandbox / 'cache' / 'arena' / 'tinyshakespeare.txt'}" in out
    assert "set ARENA_DATA=PATH" in out
    p = _doctor(sandbox, ARENA_DATA=str(corpus))  # a file, but not tinyshakespeare: said, not downloaded over
    assert p.returncode == 0 and "partial or different file" in p.stdout
    assert list(sandbox.rglob("*")) == []  # no home, no store, no cache, nothing in HOME
    real = os.environ.get("ARENA_DATA")
    if real and Path(real).is_file():
        p = _doctor(sandbox, ARENA_DATA=real)
        assert f"data {real} (ARENA_DATA; size and sha256 verified)" in _flat(p.stdout)


def _flat(table: str) -> str:
    """A rich table's text without its rules and wrapping: cells that wrapped read as one run of words."""
    return " ".join(table.replace("│", " ").split())


# -- help ------------------------------------------------------------------------------------------------------------
def _command(path: list[str]) -> Any:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=[" ".join(p) or "arena" for p in COMMAND_PATHS])
def test_every_option_has_help_and_no_flag_shows_a_value(path: list[str]) -> None:
    missing = [p.name for p in _command(path).params if p.param_type_name == "option" and not (p.help or "").strip()]
    assert not missing, f"arena {' '.join(path)}: options without help: {missing}"
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output, r.output  # a flag takes no value
    flags = [p for p in _command(path).params if getattr(p, "is_flag", False)]
    for flag in flags:  # each flag is listed, with its help on the same line
        opt = re.compile(rf"{re.escape(flag.opts[0])}(\s|$)")
        line = next(ln for ln in r.output.splitlines() if opt.search(ln))
        assert flag.help.split()[0] in line, line


# -- champions ------------------------------------------------------------------------------------------------------
def test_champions_prints_p_near_1_and_the_whole_reason(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from arena.cli.console import console

    gf, hy = Entry.of(builtin("gf")), Entry.of(builtin("hy"))
    message = ("hy: not confirmed on fresh seeds 3,4,5: mean d=-0.01234 < δ=0.02200 (σ=0.02200), p=0.99987 ≥ "
               "α=0.01000; selection mean=-0.0456789 over seeds 0,1,2")
    store.record_decision(DecisionRecord(
        spec_hash=SPEC.hash, challenger_name="hy", challenger_sha=hy.loaded.sha256,
        challenger_hparams=hy.hparams.to_dict(), champion_name="gf", champion_sha=gf.loaded.sha256,
        champion_hparams=gf.hparams.to_dict(), promoted=False, by_default=False, reason="kept",
        evidence={"mean": -0.01234, "p": 0.99987, "message": message}, code_digest=BASIS.code, stack_id=BASIS.stack,
    ))
    r = arena("champions")  # piped: 160 columns
    assert r.code == 0, r.err
    assert ">0.999" in r.out
    for token in message.split():  # each number whole, on one line
        if any(ch.isdigit() for ch in token):
            assert token in r.out, (token, r.out)
    monkeypatch.setattr(console, "width", 90)  # narrow: the reason is folded, never cut off with "…"
    r = arena("champions")
    why = "".join(line.rstrip().rstrip("│").rsplit("│", 1)[-1].strip() for line in r.out.splitlines()
                  if line.startswith("│"))
    assert "".join(message.split()) in "".join(why.split()), why


def test_the_leaderboard_table_lists_the_search_runs_beside_the_board(store: Store) -> None:
    """A store that holds tuning runs (``arena tune``) prints them under the board with their best loss and
    hparams (the table once read a key the summary had renamed, and a tournament after a search crashed)."""
    gf = Entry.of(builtin("gf"))
    for trial, (loss, gate) in enumerate([(3.25, 0.2), (3.15, 0.4)]):
        store.record_run(RunResult(
            variant="gf", variant_sha=gf.loaded.sha256, spec_hash=SPEC.hash, seed=SPEC.tuning_seeds[0],
            hparams={**gf.hparams.to_dict(), "gate_init": gate}, final_val_loss=loss, val_curve=_val_curve(loss),
            steps_done=6, code_digest=BASIS.code, stack_id=BASIS.stack, env={"device": "cpu"},
        ), study_name="tune/gf/smoke", trial_number=trial)
    from rich.console import Console

    from arena.cli.views import print_leaderboard

    console = Console(width=200, record=True)
    print_leaderboard(console, store, SPEC.hash, "table")
    text = console.export_text()
    assert "search runs (tuning seeds, not ranked)" in text
    row = next(line for line in text.splitlines() if "tune/gf/smoke" in line)
    assert "3.15" in row and "gate_init=0.4" in row


def test_a_tuned_entry_whose_best_trial_is_the_defaults_leaves_the_default_row_in_place(store: Store) -> None:
    """cp@tuned-2 adopted with cp's own defaults is the same computation as cp: the runs are shared, and cp stays
    in the default league beside it (the board once moved cp's row into the tuned league and cp vanished from the
    default one). A tuned entry with other hparams has runs of its own and leaves the default row alone."""
    from arena.orchestration.leaderboard import build

    cp, hy = Entry.of(builtin("cp")), Entry.of(builtin("hy"))
    store.add_entry("cp@tuned-2", cp.loaded.sha256, cp.hparams.to_dict(), origin="tuned", study_name="tune/cp/x",
                    league="tuned-2", budget=2)
    other = {**hy.hparams.to_dict(), "lr_mult": 2.0}
    store.add_entry("hy@tuned-2", hy.loaded.sha256, other, origin="tuned", study_name="tune/hy/x", league="tuned-2",
                    budget=2)
    for seed in SPEC.seeds:
        store.record_run(RunResult(
            variant="hy", variant_sha=hy.loaded.sha256, spec_hash=SPEC.hash, seed=seed, hparams=other,
            final_val_loss=2.5, val_curve=_val_curve(2.5), steps_done=6, code_digest=BASIS.code,
            stack_id=BASIS.stack, env={"device": "cpu"}, params_total=51_864, params_target=51_864))
    board = build(store, SPEC.hash)
    rows = {(league.name, row.name): row for league in board.leagues for row in league.rows}
    assert rows[("default", "cp")].losses == rows[("tuned-2", "cp@tuned-2")].losses == LOSSES["cp"]
    assert rows[("default", "hy")].losses == LOSSES["hy"]
    assert rows[("tuned-2", "hy@tuned-2")].losses == {0: 2.5, 1: 2.5, 2: 2.5}
    assert ("default", "cp@tuned-2") not in rows and ("tuned-2", "cp") not in rows


def test_the_default_row_is_the_declared_defaults_and_hand_set_runs_rank_apart(store: Store) -> None:
    """The store keeps each version's declared defaults, so the default league holds exactly the runs with them:
    cp tuned twice (cp@tuned-2 = its defaults, cp@tuned-4 not) leaves one default cp row, the defaults' (the rule
    once inferred from tournaments gave cp@tuned-4's runs a default row too); a run with hyperparameters set by
    hand (``arena run --hp``) is neither, and lands in league ``custom`` under a name that says what differs."""
    from arena.orchestration.leaderboard import build

    cp, gf = Entry.of(builtin("cp")), Entry.of(builtin("gf"))
    assert store.variant(cp.loaded.sha256).defaults == cp.hparams.to_dict()  # recorded when registered
    other = {**cp.hparams.to_dict(), "lr_scale": 2.0}
    store.add_entry("cp@tuned-2", cp.loaded.sha256, cp.hparams.to_dict(), origin="tuned", study_name="tune/cp/x",
                    league="tuned-2", budget=2)
    store.add_entry("cp@tuned-4", cp.loaded.sha256, other, origin="tuned", study_name="tune/cp/y", league="tuned-4",
                    budget=4)
    hand = {**gf.hparams.to_dict(), "gate_init": 0.2}
    for seed in SPEC.seeds:
        for variant, sha, hp in (("cp", cp.loaded.sha256, other), ("gf", gf.loaded.sha256, hand)):
            store.record_run(RunResult(
                variant=variant, variant_sha=sha, spec_hash=SPEC.hash, seed=seed, hparams=hp, final_val_loss=2.5,
                val_curve=_val_curve(2.5), steps_done=6, code_digest=BASIS.code, stack_id=BASIS.stack,
                env={"device": "cpu"}, params_total=51_864, params_target=51_864))
    store.start_tournament(SPEC.hash, "default", BASIS.code, BASIS.stack, {}, "f", ["cp", "gf", "hy"])
    board = build(store, SPEC.hash)
    rows = {(league.name, row.name): row for league in board.leagues for row in league.rows}
    assert rows[("default", "cp")].losses == LOSSES["cp"] and rows[("default", "gf")].losses == LOSSES["gf"]
    assert [name for lg, name in rows if lg == "default"].count("cp") == 1
    assert rows[("tuned-4", "cp@tuned-4")].losses == {0: 2.5, 1: 2.5, 2: 2.5}
    assert rows[("custom", "gf[gate_init=0.2]")].losses == {0: 2.5, 1: 2.5, 2: 2.5}
    assert [lg.name for lg in board.leagues] == ["default", "tuned-2", "tuned-4", "custom"]
