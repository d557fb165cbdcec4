"""The leaderboard compares like with like: one basis, the seeds every row shares, one league at a time; Δ vs the
champion with its paired CI and the promotion rule's verdict. Every exported number is checked against a value
computed by hand here."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
from boards import crown_by_default

from arena.cli import render
from arena.core.result import RunResult
from arena.core.spec import PRESETS, Spec
from arena.core.stack import Basis
from arena.db.store import Store
from arena.orchestration.entries import Entry
from arena.orchestration.execute import register
from arena.orchestration.leaderboard import build
from arena.orchestration.specs import find_spec_hash
from arena.runner.loader import builtin

SPEC: Spec = PRESETS["smoke"].derive(seeds=(0, 1, 2))
BASIS = Basis.of("c0de", {"device": "cpu"})
T_975_2 = 4.302652729911275  # Student t quantile 0.975 with 2 degrees of freedom (tables)

# Final losses by hand: gf the champion; cp better on every seed; hy worse; gf_mh with an extra seed 7.
LOSSES = {
    "gf": {0: 3.00, 1: 3.10, 2: 3.20},
    "cp": {0: 2.90, 1: 3.05, 2: 3.05},
    "hy": {0: 3.30, 1: 3.40, 2: 3.50},
    "gf_mh": {0: 3.01, 1: 3.11, 2: 3.21, 7: 1.00},  # a one-off `arena run gf_mh --seed 7`: never in the mean
}


def _record(store: Store, entry: Entry, seed: int, loss: float, basis: Basis = BASIS) -> None:
    store.record_run(RunResult(
        variant=entry.name, variant_sha=entry.loaded.sha256, spec_hash=SPEC.hash, seed=seed,
        hparams=entry.hparams.to_dict(), final_val_loss=loss, code_digest=basis.code, stack_id=basis.stack,
        env={"device": "cpu"}, params_total=51_800 if entry.name == "cp" else 51_864, params_target=51_864,
    ))


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = Store(f"sqlite:///{tmp_path / 'arena.db'}")
    entries = {name: Entry.of(builtin(name)) for name in LOSSES}
    register(s, SPEC, entries.values())
    for name, losses in LOSSES.items():
        for seed, loss in losses.items():
            _record(s, entries[name], seed, loss)
    gf = entries["gf"]
    crown_by_default(s, SPEC, gf, BASIS, sorted(LOSSES),
                     [{"kind": "kept", "entry": "cp", "message": "cp: not confirmed: p=0.2 ≥ α=0.01"}])
    yield s
    s.close()


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    n = len(values)
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = T_975_2 * sd / math.sqrt(n)
    return m, m - half, m + half


def test_rows_rank_on_the_shared_seeds_and_show_extra_seeds_apart(store: Store) -> None:
    board = build(store, SPEC.hash)
    assert board.ranking_seeds == (0, 1, 2)
    rows = {r.name: r for r in board.rows}
    assert [r.name for r in board.rows] == ["cp", "gf", "gf_mh", "hy"]  # gf_mh's seed 7 (1.00) moves nothing
    assert rows["gf_mh"].mean == pytest.approx(3.11) and rows["gf_mh"].extra == {7: 1.00}
    assert rows["gf"].is_champion and rows["gf"].verdict == "champion"
    assert rows["cp"].verdict == "not confirmed: p=0.2 ≥ α=0.01"  # the rule's own words, from the tournament
    assert rows["cp"].deviation == pytest.approx((51_800 - 51_864) / 51_864)
    # σ: gf's seed-to-seed std over the tournament seeds = 0.1
    assert board.noise_floor == pytest.approx(0.1)


def test_exports_carry_the_numbers_computed_by_hand(store: Store) -> None:
    board = build(store, SPEC.hash)
    m, lo, hi = _mean_ci([2.90, 3.05, 3.05])
    d = [2.90 - 3.00, 3.05 - 3.10, 3.05 - 3.20]  # cp − gf per seed
    dm, dlo, dhi = _mean_ci(d)
    data = json.loads(render.as_json(board))
    (league,) = data["leagues"]
    cp = next(r for r in league["rows"] if r["variant"] == "cp")
    assert cp["mean_val_loss"] == pytest.approx(m) and cp["ci95"] == pytest.approx([lo, hi])
    assert cp["delta_vs_champion"] == pytest.approx(dm) and cp["delta_ci95"] == pytest.approx([dlo, dhi])
    assert cp["rank"] == 1 and cp["seeds"] == [0, 1, 2] and cp["params_deviation"] == pytest.approx(-64 / 51_864)
    assert league["champion"] == "gf" and league["champion_by_default"] is True
    assert data["ranking_seeds"] == [0, 1, 2] and data["code_digest"] == "c0de"

    rows = {r["variant"]: r for r in csv.DictReader(io.StringIO(render.as_csv(board)))}
    assert float(rows["cp"]["mean_val_loss"]) == pytest.approx(m)
    assert float(rows["cp"]["delta_ci95_low"]) == pytest.approx(dlo)
    assert float(rows["cp"]["delta_ci95_high"]) == pytest.approx(dhi)
    assert rows["gf_mh"]["extra_seeds"] == "1" and float(rows["gf_mh"]["mean_val_loss"]) == pytest.approx(3.11)

    md = render.as_markdown(board)
    cp_line = next(line for line in md.splitlines() if line.startswith("| 1 | cp"))
    assert f"{m:.4f}" in cp_line and f"[{lo:.4f}, {hi:.4f}]" in cp_line
    assert f"{dm:+.4f}" in cp_line and f"[{dlo:+.4f}, {dhi:+.4f}]" in cp_line
    assert "ranked on tournament seeds 0–2" in md


def test_a_row_missing_a_tournament_seed_is_not_ranked(store: Store) -> None:
    ws = Entry.of(builtin("ws"))
    register(store, SPEC, [ws])
    _record(store, ws, 0, 1.0)  # one seed only: far "better", but not comparable
    rows = {r.name: r for r in build(store, SPEC.hash).rows}
    assert rows["ws"].rank is None and rows["ws"].mean is None and rows["ws"].missing == [1, 2]
    assert "incomplete" in rows["ws"].verdict


def test_the_default_board_is_the_last_completed_tournament_s_spec(store: Store) -> None:
    other = SPEC.derive(seeds=(0,))  # a throwaway one-seed run, created later
    gf = Entry.of(builtin("gf"))
    register(store, other, [gf])
    store.record_run(RunResult(variant="gf", variant_sha=gf.loaded.sha256, spec_hash=other.hash, seed=0,
                               hparams=gf.hparams.to_dict(), final_val_loss=3.0, code_digest="c0de",
                               stack_id=BASIS.stack))
    assert find_spec_hash(store, None) == SPEC.hash
    store.label_spec(other.hash, "scratch")
    assert find_spec_hash(store, "scratch") == other.hash


def test_a_tuned_entry_ranks_only_in_its_league(store: Store) -> None:
    """Equal tuning: gf_mh tuned with 4 trials never ranks beside the untuned entries."""
    gf_mh = builtin("gf_mh")
    tuned = Entry.of(gf_mh, {"gate_init": 0.2}, name="gf_mh@tuned-4", origin="tuned", league="tuned-4")
    store.add_entry(tuned.name, gf_mh.sha256, tuned.hparams.to_dict(), study_name="s", league="tuned-4", budget=4)
    for seed in SPEC.seeds:
        _record(store, tuned, seed, 2.0)  # far better than every default entry, but not their rival
    board = build(store, SPEC.hash)
    leagues = {lg.name: [r.name for r in lg.rows] for lg in board.leagues}
    assert leagues == {"default": ["cp", "gf", "gf_mh", "hy"], "tuned-4": ["gf_mh@tuned-4"]}
    assert [lg.name for lg in board.leagues] == ["default", "tuned-4"]  # the default league first
    (row,) = board.leagues[1].rows
    assert row.rank == 1 and row.delta is None and not row.is_champion  # no champion in that league yet
    assert "### League tuned-4" in render.as_markdown(board)
