"""The tournament decision: family-wise error and power on simulated tournaments, and decide() on hand-made d.

Simulated tournaments: per seed s, L_C = μ + σ(√ρ c_s + √(1−ρ) e0_s) for the champion and L_X = μ − k_X σ +
σ(√ρ c_s + √(1−ρ) eX_s) for challenger X, with c, e standard normal from a seeded numpy Generator. c is the seed's
common effect (paired seeds share init and data order, so ρ > 0 in practice); the champion's noise e0 is shared by
every challenger's d, on the tournament seeds and on the fresh ones. δ = σ (σ ≥ margin): the procedure is
scale-free then, so σ = 1. ``simulate`` is a vectorised copy of ``decide``; ``test_simulator_matches_decide`` checks
that the two agree tournament by tournament.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy.special import stdtr

from arena.champions.familywise import (
    TournamentDecision,
    decide,
    fixed_sequence,
    holm,
    holm_levels,
    screen,
)
from arena.champions.policy import PolicySettings, run_contest
from arena.core.errors import ArenaError

PHASE2 = PolicySettings()  # n_start=5, n_max=10: 5 tournament seeds, 5 fresh
SMOKE = PolicySettings(n_start=3, n_max=6)  # 3 + 3
N_TOURNAMENTS = 20_000  # SE of a 1% rate ≈ 0.07%; of a 95% rate ≈ 0.15%


def draw(better_by: Sequence[float], rho: float, n_tournaments: int, n_seeds: int, seed: int) -> np.ndarray:
    """d = L_C − L_X, shape (tournaments, challengers, seeds), σ = 1; ``better_by[j]`` is k for challenger j."""
    rng = np.random.default_rng([seed, round(rho * 100), len(better_by), n_seeds])
    m = len(better_by)
    common = rng.standard_normal((n_tournaments, 1, n_seeds))
    own = rng.standard_normal((n_tournaments, m + 1, n_seeds))
    losses = math.sqrt(rho) * common + math.sqrt(1 - rho) * own  # (T, 1 + m, n): row 0 is the champion
    losses[:, 1:, :] -= np.asarray(better_by, dtype=float)[None, :, None]
    return losses[:, :1, :] - losses[:, 1:, :]


def simulate(d: np.ndarray, settings: PolicySettings = PHASE2, sigma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """``decide`` on every tournament of ``d`` at once: (winner index or −1, fresh runs trained incl. the champion's).

    The first ``n_start`` seeds of ``d`` are the tournament seeds, the next ``n_fresh`` the fresh ones. No d is
    non-finite here, so nothing is penalized.
    """
    n_t, m, _ = d.shape
    n_s, n_f, alpha = settings.n_start, settings.n_fresh, settings.alpha
    delta = settings.delta(sigma)
    d_s, d_f = d[:, :, :n_s], d[:, :, n_s : n_s + n_f]
    mean_s = d_s.mean(axis=2)
    order = np.argsort(-mean_s, axis=1, kind="stable")  # (T, m): best first; ties by index, i.e. by name
    eligible = (mean_s > 0) & (mean_s >= settings.select_min * delta)  # monotone in mean: a prefix of ``order``
    rank = np.argsort(order, axis=1)
    candidate = eligible & (rank < settings.max_candidates)
    # Futility: mean ≤ 0 after n fresh seeds, futility_after ≤ n < n_fresh; ``used`` = fresh seeds a candidate costs.
    cum = np.cumsum(d_f, axis=2)
    used = np.full((n_t, m), n_f)
    for n in range(settings.futility_after, n_f):
        stop = (used == n_f) & (cum[:, :, n - 1] <= 0)
        used[stop] = n
    mean_f = d_f.mean(axis=2)
    t = mean_f / (d_f.std(axis=2, ddof=1) / math.sqrt(n_f))
    p = stdtr(n_f - 1, -t)
    p_eff = np.where((used == n_f) & (mean_f > 0) & (mean_f >= delta), p, 1.0)
    confirmed = np.zeros((n_t, m), dtype=bool)
    tested = np.zeros((n_t, m), dtype=bool)
    rows = np.arange(n_t)
    if settings.confirm == "sequence":
        alive = np.ones(n_t, dtype=bool)
        for r in range(min(settings.max_candidates, m)):
            j = order[:, r]
            now = alive & candidate[rows, j]
            tested[rows, j] = now
            confirmed[rows, j] = now & (p_eff[rows, j] < alpha)
            alive = confirmed[rows, j]
    else:
        tested = candidate
        k = candidate.sum(axis=1)
        ps = np.sort(np.where(candidate, p_eff, np.inf), axis=1)
        levels = alpha / np.maximum(k[:, None] - np.arange(m)[None, :], 1)
        passes = ps < levels
        n_rejected = np.where(passes.all(axis=1), m, np.argmin(passes, axis=1))
        cut = np.where(n_rejected > 0, ps[rows, np.maximum(n_rejected - 1, 0)], -np.inf)
        confirmed = candidate & (p_eff <= cut[:, None])
    if n_f < 2:
        confirmed[:] = False
    overall = np.where(confirmed, d_s.sum(axis=2) + d_f.sum(axis=2), -np.inf)
    winner = np.where(confirmed.any(axis=1), overall.argmax(axis=1), -1)
    cost = np.where(tested, used, 0)
    return winner, cost.sum(axis=1) + cost.max(axis=1, initial=0) if n_f >= 2 else np.zeros(n_t)


def rates(better_by: Sequence[float], rho: float, settings: PolicySettings = PHASE2, seed: int = 0,
          n: int = N_TOURNAMENTS) -> tuple[float, float, float]:
    """(P(any promotion), P(challenger 0 promoted), mean fresh runs) over ``n`` simulated tournaments."""
    winner, runs = simulate(draw(better_by, rho, n, settings.n_max, seed), settings)
    return float((winner >= 0).mean()), float((winner == 0).mean()), float(np.mean(runs))


class Fresh:
    """A ``fresh`` callback replaying fixed d lists; records the calls and fails on a repeated or unknown one."""

    def __init__(self, d: dict[str, Sequence[float]]) -> None:
        self.d = d
        self.calls: list[tuple[str, int]] = []

    def __call__(self, name: str, i: int) -> float:
        assert (name, i) not in self.calls, f"fresh({name!r}, {i}) asked twice"
        assert name in self.d, f"fresh asked for non-candidate {name!r}"
        self.calls.append((name, i))
        return self.d[name][i]


# -- simulated error rates and power --------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
@pytest.mark.parametrize("settings", [PHASE2, PolicySettings(confirm="holm"), SMOKE], ids=["seq", "holm", "smoke"])
def test_ten_equal_challengers_rarely_promote_one(rho: float, settings: PolicySettings) -> None:
    promoted, _, runs = rates([0.0] * 10, rho, settings, seed=1)
    assert promoted <= settings.alpha, f"false promotions {promoted:.4%} per tournament (ρ={rho})"
    assert runs <= 3 * (settings.n_fresh + 1), f"mean fresh runs {runs:.1f}"


@pytest.mark.parametrize("m", [1, 5])
def test_fewer_equal_challengers_rarely_promote_one(m: int) -> None:
    promoted, _, _ = rates([0.0] * m, 0.0, seed=2)
    assert promoted <= PHASE2.alpha, f"{m} equal challengers: false promotions {promoted:.4%} per tournament"


def test_the_bound_holds_with_delta_zero() -> None:
    # margin 0 and σ 0 give δ = 0 and select_min·δ = 0: only the fresh t-tests at α stand between an equal
    # challenger and promotion, so the rate should sit at, not under, α (the t-test is exact on normal d).
    settings = PolicySettings(margin=0.0)
    winner, _ = simulate(draw([0.0] * 10, 0.0, N_TOURNAMENTS, 10, seed=3), settings, sigma=0.0)
    rate, se = float((winner >= 0).mean()), math.sqrt(0.01 * 0.99 / N_TOURNAMENTS)
    assert rate <= settings.alpha + 3 * se, f"δ = 0: false promotions {rate:.4%}"
    assert rate >= settings.alpha / 2, "far under α with δ = 0: the simulator is not testing what decide does"


@pytest.mark.parametrize("rho", [0.5, 0.8])
def test_three_sigma_better_among_nine_equal_is_promoted(rho: float) -> None:
    promoted, right, _ = rates([3.0] + [0.0] * 9, rho, seed=4)
    assert right >= 0.95, f"3σ-better challenger promoted in {right:.2%} of tournaments (ρ={rho})"
    assert promoted - right <= PHASE2.alpha, "an equal challenger was promoted instead too often"


def test_uncorrelated_seeds_need_seven_fresh_seeds() -> None:
    # ρ = 0: five fresh seeds cannot give 95% at α = 0.01 (a single t-test on 5 seeds has power 78% for 3σ at full
    # α); seven (max_seeds = 12) can. docs/champion-policy.md proposes that change if ρ ≈ 0 is expected.
    _, five, _ = rates([3.0] + [0.0] * 9, 0.0, seed=5)
    _, seven, _ = rates([3.0] + [0.0] * 9, 0.0, PolicySettings(n_max=12), seed=5)
    assert 0.70 < five < 0.85 and seven >= 0.95, (five, seven)


def test_fixed_sequence_beats_holm_on_power() -> None:
    # Why the default is "sequence": Holm splits α over up to 3 candidates and drops under 95% at ρ = 0.5.
    d = draw([3.0] + [0.0] * 9, 0.5, N_TOURNAMENTS, 10, seed=6)
    seq = float((simulate(d, PHASE2)[0] == 0).mean())
    hol = float((simulate(d, PolicySettings(confirm="holm"))[0] == 0).mean())
    assert seq >= 0.95 > hol, (seq, hol)


def test_the_old_per_entry_rule_inflates_false_promotions() -> None:
    # The rule this module replaces: every entry whose mean beats the champion on the tournament seeds runs the
    # sequential contest (policy.run_contest, α = 0.01 split over looks 5, 7, 10) starting on those same seeds.
    d = draw([0.0] * 10, 0.0, 2000, 10, seed=7)
    old = 0
    for tournament in d.tolist():
        beats = [row for row in tournament if sum(row[:5]) > 0]
        old += any(run_contest(row.__getitem__, 1.0, PHASE2).promoted for row in beats)
    new = int((simulate(d)[0] >= 0).sum())
    assert old / len(d) > 2 * PHASE2.alpha, f"old rule: {old}/{len(d)} tournaments with a false promotion"
    assert new / len(d) <= PHASE2.alpha, f"new rule: {new}/{len(d)}"


@pytest.mark.parametrize("settings", [PHASE2, PolicySettings(confirm="holm"), SMOKE], ids=["seq", "holm", "smoke"])
def test_simulator_matches_decide(settings: PolicySettings) -> None:
    better = [2.0, 1.5, 1.0, 0.5, 0.0]
    d = draw(better, 0.5, 400, settings.n_max, seed=8)
    winner, runs = simulate(d, settings)
    names = [f"c{j}" for j in range(len(better))]
    for t, tournament in enumerate(d.tolist()):
        fresh = Fresh({name: row[settings.n_start :] for name, row in zip(names, tournament, strict=True)})
        decision = decide({name: row[: settings.n_start] for name, row in zip(names, tournament, strict=True)},
                          fresh, 1.0, settings)
        expected = None if winner[t] < 0 else names[winner[t]]
        assert decision.winner == expected, (t, decision.message)
        assert decision.fresh_calls + decision.champion_fresh == runs[t], t


# -- Holm and fixed-sequence ------------------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # k = 4, α = 0.05. Ascending: 0.005 (level α/4 = 0.0125), 0.01 (α/3 ≈ 0.01667), 0.03 (α/2 = 0.025), 0.04 (α).
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_levels(p, 0.05) == pytest.approx((0.05 / 3, 0.05, 0.025, 0.0125))
    # 0.005 < 0.0125 and 0.01 < 0.01667 are rejected; 0.03 ≥ 0.025 stops the step-down, so 0.04 < 0.05 is not.
    assert holm(p, 0.05) == (True, False, False, True)


def test_holm_at_the_policy_alpha() -> None:
    # α = 0.01, k = 3: levels 0.00333, 0.005, 0.01.
    assert holm([0.001, 0.004, 0.02], 0.01) == (True, True, False)  # 0.02 ≥ 0.01
    assert holm([0.004, 0.001, 0.006], 0.01) == (True, True, True)  # 0.001 < 0.00333, 0.004 < 0.005, 0.006 < 0.01
    assert holm([0.0034, 0.001, 0.006], 0.01) == (True, True, True)  # 0.0034 is compared with 0.005, not 0.00333
    assert holm([0.005, 0.006, 0.001], 0.01) == (False, False, True)  # 0.005 ≥ 0.005 (strict) stops it
    assert holm([0.0034, 0.004, 0.006], 0.01) == (False, False, False)  # the smallest, 0.0034 ≥ 0.00333, stops it


def test_holm_edge_cases() -> None:
    assert holm([], 0.01) == () and holm_levels([], 0.01) == ()
    assert holm([0.009], 0.01) == (True,) and holm([0.01], 0.01) == (False,)  # strict, like every policy test
    assert holm([math.nan, 0.001], 0.01) == (False, True)  # NaN sorts last and is never rejected
    assert holm([0.004, 0.004], 0.01) == (True, True)  # ties: 0.004 < 0.005, then 0.004 < 0.01
    assert holm([0.006, 0.006], 0.01) == (False, False)  # 0.006 ≥ 0.005 stops it at once


def test_fixed_sequence_by_hand() -> None:
    assert fixed_sequence([0.001, 0.009, 0.02, 0.001], 0.01) == (True, True, False, False)
    assert fixed_sequence([0.02, 0.001], 0.01) == (False, False)  # a blocked later p is never rejected
    assert fixed_sequence([], 0.01) == ()


# -- decide on hand-made differences ----------------------------------------------------------------------------

SIGMA = 0.01  # δ = max(margin 0.005, σ) = 0.01; a candidate needs mean(d) ≥ 0.005 on the tournament seeds
GOOD = [0.03, 0.032, 0.029, 0.031, 0.03]  # p ≈ 1e-7, mean 0.0304
FAIR = [0.02, 0.022, 0.019, 0.021, 0.02]  # confirmed too, smaller mean
FLAT = [0.0, 0.001, -0.001, 0.0005, -0.0005]


def test_only_candidates_are_asked_for_fresh_seeds() -> None:
    select = {
        "a": [0.03, 0.025, 0.035, 0.028, 0.031],
        "worse": [-0.01, 0.0, -0.02, 0.01, -0.005],
        "tiny": [0.003, 0.002, 0.004, 0.003, 0.003],  # > 0 but < select_min·δ = 0.005
    }
    fresh = Fresh({"a": GOOD})
    decision = decide(select, fresh, SIGMA, PHASE2)
    assert fresh.calls == [("a", i) for i in range(5)]
    assert decision.winner == "a" and decision.confirmed == ("a",)
    reasons = {s.name: s.reason for s in decision.screening}
    assert reasons == {"a": "candidate", "worse": "not better", "tiny": "below the threshold"}
    assert [c.name for c in decision.confirmations] == ["a"]
    verdicts = decision.verdicts()
    assert verdicts["a"].startswith("PROMOTED: confirmed on fresh seeds 5–9: p=")
    assert verdicts["worse"].startswith("not a candidate: not better than the champion")
    assert verdicts["tiny"].startswith("not a candidate: mean(d) < 0.5·δ = 0.005")
    assert decision.message.startswith("a dethrones the champion (confirmed on fresh seeds 5–9")
    assert (decision.fresh_calls, decision.champion_fresh) == (5, 5)


def test_sequence_stops_at_the_first_candidate_not_confirmed() -> None:
    select = {"best": [0.05] * 4 + [0.051], "second": [0.04] * 4 + [0.041], "third": [0.03] * 4 + [0.031]}
    fresh = Fresh({"best": FLAT, "second": GOOD, "third": GOOD})
    decision = decide(select, fresh, SIGMA, PHASE2)
    # FLAT: mean(d) = 0 after 3 fresh seeds → futile, stopped; the sequence never reaches "second".
    assert fresh.calls == [("best", 0), ("best", 1), ("best", 2)]
    assert decision.winner is None
    by_name = {c.name: c for c in decision.confirmations}
    assert (by_name["best"].reason, by_name["best"].n) == ("futile", 3)
    assert by_name["second"].reason == by_name["third"].reason == "not tested"
    assert by_name["second"].message == "not confirmed: not tested, the sequence (best first, each at α=0.01) " \
                                        "stopped at best"
    assert decision.message == "champion holds: none of 3 candidate(s) confirmed on fresh seeds 5–9"
    assert decision.champion_fresh == 3


def test_several_confirmed_the_best_overall_mean_is_crowned() -> None:
    # "b" leads on the tournament seeds, "a" on the fresh ones; over all 10 seeds "a" is better: "a" is crowned.
    select = {"a": [0.03] * 4 + [0.031], "b": [0.035] * 4 + [0.036]}
    for settings in (PHASE2, PolicySettings(confirm="holm")):
        fresh = Fresh({"a": [0.05, 0.052, 0.049, 0.051, 0.05], "b": FAIR})
        decision = decide(select, fresh, SIGMA, settings)
        assert decision.confirmed == ("a", "b") and decision.winner == "a"
        b = next(c for c in decision.confirmations if c.name == "b")
        assert b.confirmed and b.message.startswith("confirmed but not crowned: ")
        assert "a has the better mean(d) over all 10 seeds" in b.message
        assert b.overall_mean == pytest.approx((0.035 * 4 + 0.036 + sum(FAIR)) / 10)
    # The sequence asks "b" (rank 1) first, then "a"; Holm asks seed by seed across both.
    fresh = Fresh({"a": GOOD, "b": FAIR})
    decide(select, fresh, SIGMA, PHASE2)
    assert fresh.calls == [("b", i) for i in range(5)] + [("a", i) for i in range(5)]
    fresh = Fresh({"a": GOOD, "b": FAIR})
    decide(select, fresh, SIGMA, PolicySettings(confirm="holm"))
    assert fresh.calls == [(name, i) for i in range(5) for name in ("b", "a")]


def test_holm_levels_in_the_messages() -> None:
    select = {"a": [0.03] * 4 + [0.031], "b": [0.035] * 4 + [0.036]}
    decision = decide(select, Fresh({"a": GOOD, "b": FAIR}), SIGMA, PolicySettings(confirm="holm"))
    alphas = {c.name: c.alpha for c in decision.confirmations}
    assert alphas == pytest.approx({"a": 0.005, "b": 0.01})  # a's p is the smaller: α/2 first, then α
    assert "< Holm α=0.005" in decision.verdicts()["a"]


def test_max_candidates_caps_the_fresh_runs() -> None:
    select = {f"c{j}": [0.03 + j / 1000] * 5 for j in range(5)}
    fresh = Fresh({f"c{j}": FLAT for j in range(5)})
    decision = decide(select, fresh, SIGMA, PolicySettings(confirm="holm", max_candidates=2))
    assert {name for name, _ in fresh.calls} == {"c4", "c3"}
    outranked = [s for s in decision.screening if s.reason == "outranked"]
    assert [s.name for s in outranked] == ["c2", "c1", "c0"]
    assert outranked[0].message.startswith("not a candidate: rank 3, only the best 2 go on to fresh seeds")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_differences_are_losses(bad: float) -> None:
    # On the tournament seeds: a failed seed is −max(δ, max|d|), so the mean drops (0.03·4 − 0.03)/5 = 0.018.
    select = {"x": [0.03, bad, 0.03, 0.03, 0.03]}
    rows = screen(select, SIGMA, PHASE2)
    assert rows[0].mean == pytest.approx(0.018) and rows[0].n_failed == 1
    assert math.isnan(rows[0].d[1]) == math.isnan(bad)
    assert "1 non-finite seed(s) counted as losses" in rows[0].message
    # On the fresh seeds: one failure among otherwise clear wins still cannot be confirmed at α = 0.01.
    fresh = Fresh({"x": [0.03, 0.031, bad, 0.029, 0.03]})
    decision = decide(select, fresh, SIGMA, PHASE2)
    confirmation = decision.confirmations[0]
    assert decision.winner is None and confirmation.n_failed == 1 and confirmation.reason == "not significant"
    # A champion that fails on every fresh seed is a challenger loss too: futile after 3.
    fresh = Fresh({"x": [bad] * 5})
    assert decide(select, fresh, SIGMA, PHASE2).confirmations[0].reason == "futile" and len(fresh.calls) == 3


def test_under_the_margin_on_fresh_seeds() -> None:
    fresh = Fresh({"x": [0.008, 0.0081, 0.0079, 0.008, 0.008]})  # p tiny, mean 0.008 < δ = 0.01
    decision = decide({"x": GOOD}, fresh, SIGMA, PHASE2)
    c = decision.confirmations[0]
    assert (c.reason, c.confirmed, decision.winner) == ("under the margin", False, None)
    assert c.message.startswith("not confirmed on fresh seeds 5–9: mean(d) < δ; p=")


def test_no_fresh_seeds_means_no_promotion() -> None:
    settings = PolicySettings(n_start=5, n_max=6)  # one fresh seed: no t-test possible
    fresh = Fresh({"x": GOOD})
    decision = decide({"x": GOOD}, fresh, SIGMA, settings)
    assert fresh.calls == [] and decision.winner is None
    assert decision.confirmations[0].reason == "too few seeds"


def test_empty_and_no_candidate_tournaments() -> None:
    decision = decide({}, Fresh({}), SIGMA, PHASE2)
    assert (decision.winner, decision.message) == (None, "champion holds: no challengers")
    decision = decide({"w": [-0.01] * 5}, Fresh({}), SIGMA, PHASE2)
    assert decision.message.startswith("champion holds: no candidate among 1 challenger(s) on seeds 0–4")


def test_seeds_name_the_messages_and_lengths_are_checked() -> None:
    seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10]  # e.g. seed 9 is a tuning seed
    decision = decide({"x": GOOD}, Fresh({"x": GOOD}), SIGMA, PHASE2, seeds)
    assert "fresh seeds 5, 6, 7, 8, 10" in decision.verdicts()["x"]
    with pytest.raises(ValueError, match="one per tournament seed"):
        decide({"x": GOOD[:4]}, Fresh({}), SIGMA, PHASE2)
    with pytest.raises(ValueError, match="n_max=10"):
        decide({"x": GOOD}, Fresh({}), SIGMA, PHASE2, seeds[:8])
    for sigma in (-0.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma"):
            decide({"x": GOOD}, Fresh({}), sigma, PHASE2)


def test_decision_is_plain_json() -> None:
    decision = decide({"x": [0.03, math.nan, 0.03, 0.03, 0.03], "y": GOOD}, Fresh({"x": GOOD, "y": GOOD}), SIGMA,
                      PHASE2)
    assert isinstance(decision, TournamentDecision)
    data = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert data["winner"] == "y" and data["promoted"] is True
    assert data["screening"][1]["d"][1] is None  # the NaN
    assert set(data["verdicts"]) == {"x", "y"}


@pytest.mark.parametrize("changes", [{"max_candidates": 0}, {"select_min": -0.1}, {"select_min": math.nan},
                                     {"confirm": "bonferroni"}])
def test_invalid_settings_fail_clearly(changes: dict[str, Any]) -> None:
    with pytest.raises(ArenaError):
        PolicySettings(**changes)
    assert PHASE2.n_fresh == 5 and SMOKE.n_fresh == 3
