"""The promotion policy: its decisions on hand-made differences, and its error rates on simulated noise.

Simulated contests: per seed s, L_champion = μ + σ(√ρ c_s + √(1−ρ) e1_s) and L_challenger = μ − kσ + σ(√ρ c_s +
√(1−ρ) e2_s), with c, e1, e2 standard normal from a seeded numpy Generator. ρ is the seed correlation of a paired
design (both models share the seed's init and data order); k = 0 is an equal challenger, k = 3 one better by 3σ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import scipy.stats

from arena.champions.policy import (
    PolicySettings,
    Verdict,
    evaluate,
    looks,
    run_contest,
)
from arena.champions.stats import noise_floor
from arena.core.errors import ArenaError

DEFAULT = PolicySettings()
N_CONTESTS = 1000


def simulate(
    n: int,
    sigma: float,
    better_by_sigmas: float,
    rho: float,
    seed: int,
    settings: PolicySettings = DEFAULT,
    policy_sigma: float | None = None,
) -> tuple[int, float]:
    """Run ``n`` simulated contests; return (number promoted, mean seeds used). Draws depend on (seed, σ, ρ)."""
    rng = np.random.default_rng([seed, round(sigma * 1e6), round(rho * 100)])
    shape = (n, settings.n_max)
    common, e1, e2 = rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape)
    mu = 1.5
    champ = mu + sigma * (math.sqrt(rho) * common + math.sqrt(1 - rho) * e1)
    chal = mu - better_by_sigmas * sigma + sigma * (math.sqrt(rho) * common + math.sqrt(1 - rho) * e2)
    promoted, seeds = 0, 0
    for row in (champ - chal).tolist():
        v = run_contest(row.__getitem__, sigma if policy_sigma is None else policy_sigma, settings)
        promoted += v.promoted
        seeds += v.n
    return promoted, seeds / n


class Recorder:
    """A ``next_d`` that replays fixed differences and records which seed indices were asked for."""

    def __init__(self, d: Sequence[float]) -> None:
        self.d = list(d)
        self.calls: list[int] = []

    def __call__(self, i: int) -> float:
        self.calls.append(i)
        return self.d[i]


# -- simulated error rates ------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [0.0, 0.5])
@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.03])
def test_equal_challenger_is_rarely_promoted(sigma: float, rho: float) -> None:
    promoted, seeds = simulate(N_CONTESTS, sigma, 0.0, rho, seed=1)
    assert promoted < 0.01 * N_CONTESTS, f"equal challenger promoted {promoted}/{N_CONTESTS} (σ={sigma}, ρ={rho})"
    # Futility stops about half of them after 3 seeds, so an equal challenger costs well under n_start on average.
    assert seeds < DEFAULT.n_start, f"mean seeds {seeds:.2f}"


def test_alpha_split_alone_holds_the_false_promotion_rate() -> None:
    # δ = 0 (no margin, no noise floor) leaves only the t-tests at the three looks: this checks that peeking with
    # borderline extensions cannot push the false-promotion rate above α.
    settings = PolicySettings(margin=0.0)
    n = 8000
    promoted, _ = simulate(n, 0.01, 0.0, 0.0, seed=2024, settings=settings, policy_sigma=0.0)
    assert promoted < settings.alpha * n, f"equal challenger promoted {promoted}/{n} with δ=0"


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
@pytest.mark.parametrize("sigma", [0.005, 0.01, 0.03])
def test_challenger_better_by_three_sigma_is_promoted(sigma: float, rho: float) -> None:
    promoted, seeds = simulate(N_CONTESTS, sigma, 3.0, rho, seed=2)
    assert promoted > 0.9 * N_CONTESTS, f"3σ-better challenger promoted {promoted}/{N_CONTESTS} (σ={sigma}, ρ={rho})"
    assert seeds <= DEFAULT.n_max


def test_noise_below_the_margin_needs_more_than_three_sigma() -> None:
    # σ = 0.001 < margin: δ = 0.005 = 5σ, so a 3σ (0.003 nats) improvement is under the margin and never promoted.
    promoted, _ = simulate(N_CONTESTS, 0.001, 3.0, 0.5, seed=3)
    assert promoted == 0, f"0.003-nat improvement promoted {promoted}/{N_CONTESTS} under a 0.005 margin"


# -- the sequential procedure ---------------------------------------------------------------------------------


def test_worse_challenger_stops_after_futility_seeds() -> None:
    rec = Recorder([-0.02, -0.01, 0.005, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    v = run_contest(rec, 0.01, DEFAULT)
    assert (v.action, v.reason, v.n) == ("reject", "futile", 3)
    assert rec.calls == [0, 1, 2]
    assert v.message.startswith("futile: mean(d)=")


def test_futility_waits_for_futility_after() -> None:
    v = evaluate([-0.1, -0.2], 0.01, DEFAULT)
    assert (v.action, v.reason) == ("more_seeds", "collecting")
    assert evaluate([-0.1, -0.2, -0.1, -0.3], 0.01, DEFAULT).reason == "futile"


def test_clear_winner_is_promoted_at_the_first_look() -> None:
    rec = Recorder([0.05, 0.052, 0.049, 0.051, 0.048, 0, 0, 0, 0, 0])
    v = run_contest(rec, 0.01, DEFAULT)
    assert (v.action, v.reason, v.n) == ("promote", "promoted", 5)
    assert rec.calls == [0, 1, 2, 3, 4]
    assert v.alpha_look == pytest.approx(0.01 / 3)


def test_borderline_extends_to_the_next_look() -> None:
    # After 5 seeds p ≈ 0.03 (between α_look and 0.1) with mean(d) ≥ δ: borderline; 2 more good seeds settle it.
    d = [0.03, 0.0, 0.035, 0.01, 0.04, 0.03, 0.031, 0, 0, 0]
    at_five = evaluate(d[:5], 0.01, DEFAULT)
    assert (at_five.action, at_five.reason) == ("more_seeds", "borderline")
    assert DEFAULT.alpha_at(5) <= at_five.p < DEFAULT.borderline_p
    assert "adding seeds up to 7" in at_five.message
    assert evaluate(d[:6], 0.01, DEFAULT).reason == "collecting"  # between looks
    rec = Recorder(d)
    v = run_contest(rec, 0.01, DEFAULT)
    assert (v.action, v.n) == ("promote", 7), v.message
    assert rec.calls == list(range(7))


def test_cap_is_respected_when_always_borderline() -> None:
    # mean(d) just under δ with tiny spread: significant but under the margin, within one σ of δ at every look.
    d = [0.009 + 1e-4 * ((-1) ** i) for i in range(10)]
    rec = Recorder(d)
    v = run_contest(rec, 0.01, DEFAULT)
    assert rec.calls == list(range(10)), "asked for seeds beyond n_max or skipped one"
    assert (v.action, v.reason, v.n) == ("reject", "under the margin", 10)
    assert "mean(d) < δ = max(margin 0.005, σ 0.01)" in v.message
    with pytest.raises(ValueError, match="more than n_max"):
        evaluate([*d, 0.01], 0.01, DEFAULT)


def test_not_significant_when_far_from_the_thresholds() -> None:
    v = evaluate([0.1, -0.08, 0.09, -0.07, 0.02], 0.01, DEFAULT)
    assert (v.action, v.reason) == ("reject", "not significant")
    assert v.p >= DEFAULT.borderline_p
    assert v.message.startswith("not significant: p ≥ α; mean(d)=")


def test_not_better_at_a_look() -> None:
    v = evaluate([0.01, -0.02, 0.01, -0.02, 0.01], 0.01, DEFAULT)
    assert (v.action, v.reason) == ("reject", "not better")
    assert v.mean < 0


def test_under_the_margin_far_below_delta() -> None:
    v = evaluate([0.004, 0.0041, 0.0039, 0.004, 0.0040], 0.03, DEFAULT)  # δ = 0.03, mean 0.004 < δ − σ = 0
    # mean ≥ δ − σ = 0 holds here, so it is borderline, not rejected, until the last look.
    assert v.reason == "borderline"
    v = evaluate([0.004, 0.0041, 0.0039, 0.004, 0.0040], 0.01, PolicySettings(margin=0.05))  # δ=0.05, δ−σ=0.04
    assert (v.action, v.reason) == ("reject", "under the margin")
    assert v.p < v.alpha_look


def test_statistics_match_scipy() -> None:
    d = [0.012, 0.004, 0.02, -0.003, 0.015]
    v = evaluate(d, 0.01, DEFAULT)
    ref = scipy.stats.ttest_1samp(d, 0.0, alternative="greater")
    assert v.t == pytest.approx(ref.statistic, rel=1e-12)
    assert v.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert v.std == pytest.approx(float(np.std(d, ddof=1)), rel=1e-12)
    assert v.delta == 0.01 and v.d == tuple(d) and v.sigma == 0.01


def test_verdict_is_a_frozen_record() -> None:
    v = evaluate([0.05, 0.05, 0.05, 0.05, 0.06], 0.01, DEFAULT)
    assert isinstance(v, Verdict)
    with pytest.raises(AttributeError):
        v.action = "reject"


# -- edge cases -----------------------------------------------------------------------------------------------


def test_zero_variance() -> None:
    v = evaluate([0.02] * 5, 0.01, DEFAULT)
    assert (v.action, v.std, v.t, v.p) == ("promote", 0.0, math.inf, 0.0)
    v = evaluate([0.0] * 5, 0.01, DEFAULT)
    assert (v.action, v.reason, v.p) == ("reject", "not better", 1.0)
    assert math.isnan(v.t)


def test_fewer_than_two_seeds() -> None:
    assert evaluate([], 0.01, DEFAULT).reason == "collecting"
    v = evaluate([0.5], 0.01, DEFAULT)
    assert (v.action, v.reason) == ("more_seeds", "collecting") and math.isnan(v.p)
    v = evaluate([0.5], 0.01, DEFAULT, final=True)
    assert (v.action, v.reason) == ("reject", "too few seeds")


def test_final_off_schedule_spends_the_next_looks_alpha() -> None:
    v = evaluate([0.05, 0.051, 0.049, 0.05], 0.01, DEFAULT, final=True)
    assert v.alpha_look == DEFAULT.alpha_at(5) and v.action == "promote"
    v = evaluate([0.03, 0.0, 0.035, 0.01, 0.04], 0.01, DEFAULT, final=True)  # borderline, but no seeds left
    assert (v.action, v.reason) == ("reject", "not significant")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_difference_counts_as_a_challenger_loss(bad: float) -> None:
    good = [0.05, 0.052, 0.049, 0.051]
    v = evaluate([*good, bad], 0.01, DEFAULT)
    assert v.n_failed == 1 and math.isnan(v.d[-1]) == math.isnan(bad)
    # The failed seed is replaced by −max(δ, max |d|) = −0.052, so the mean drops below the four good seeds'.
    assert v.mean == pytest.approx((sum(good) - 0.052) / 5)
    assert v.action != "promote"
    assert "1 non-finite seed(s) counted as losses" in v.message
    # All seeds failed: mean < 0 → futile after 3 seeds.
    assert evaluate([bad] * 3, 0.01, DEFAULT).reason == "futile"


def test_sigma_must_be_finite_and_non_negative() -> None:
    for sigma in (-0.01, math.nan, math.inf):
        with pytest.raises(ValueError, match="sigma"):
            evaluate([0.1, 0.2], sigma, DEFAULT)


# -- schedule and settings ------------------------------------------------------------------------------------


def test_look_schedule() -> None:
    assert looks(5, 10) == (5, 7, 10)
    assert looks(3, 6) == (3, 4, 6)
    assert looks(5, 5) == (5,)
    assert looks(5, 6) == (5, 6)
    assert looks(5, 10, 6) == (5, 6, 7, 8, 9, 10)
    assert looks(5, 10, 1) == (5,)
    assert DEFAULT.schedule == (5, 7, 10)


def test_alpha_split_sums_to_alpha() -> None:
    for settings in (DEFAULT, PolicySettings(n_looks=6), PolicySettings(n_start=3, n_max=6), PolicySettings(n_looks=1)):
        total = sum(settings.alpha_at(n) for n in range(settings.n_max + 1))
        assert total == pytest.approx(settings.alpha)
    assert DEFAULT.alpha_at(6) == 0.0


def test_single_look_never_extends() -> None:
    settings = PolicySettings(n_looks=1)
    rec = Recorder([0.03, 0.0, 0.035, 0.01, 0.04, 0.03, 0.031, 0, 0, 0])
    v = run_contest(rec, 0.01, settings)
    assert (v.n, v.reason) == (5, "not significant")


@pytest.mark.parametrize(
    "changes",
    [
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"margin": -0.1},
        {"borderline_p": 0.001},
        {"n_start": 1},
        {"n_start": 6, "n_max": 5},
        {"futility_after": 0},
        {"n_looks": 0},
    ],
)
def test_invalid_settings_fail_clearly(changes: dict[str, float]) -> None:
    with pytest.raises(ArenaError):
        PolicySettings(**changes)


# -- noise floor and first champion ---------------------------------------------------------------------------


def test_noise_floor() -> None:
    losses = [1.51, 1.49, 1.52, 1.48, 1.50]
    assert noise_floor(losses) == pytest.approx(float(np.std(losses, ddof=1)))
    assert noise_floor([*losses, math.nan]) == pytest.approx(noise_floor(losses))
    with pytest.raises(ValueError, match="at least 2"):
        noise_floor([1.5, math.inf])


def _tournament(rng: np.random.Generator, means: dict[str, float], sigma: float, n: int = 5) -> dict[str, list[float]]:
    common = rng.standard_normal(n)
    return {
        name: list(mu + sigma * (math.sqrt(0.5) * common + math.sqrt(0.5) * rng.standard_normal(n)))
        for name, mu in means.items()
    }


