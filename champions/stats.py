"""The statistics every verdict and every table uses: one module, so the leaderboard, the champion registry and the
noise floor can never disagree about σ, a t-test or an interval. Pure: no I/O.

Conventions: ``d`` is a list of paired differences (champion − challenger per seed: positive when the challenger is
better); losses are final val losses in nats; every interval is a two-sided Student-t interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.special import stdtr, stdtrit


@dataclass(frozen=True)
class TTest:
    """A one-sample t-test of mean > 0: n, mean, sample std (ddof=1), t, one-sided p."""

    n: int
    mean: float
    std: float
    t: float
    p: float

    @property
    def p_two_sided(self) -> float:
        if not math.isfinite(self.p):
            return math.nan
        return min(1.0, 2 * min(self.p, 1 - self.p)) if self.std > 0 else (0.0 if self.mean != 0 else 1.0)


def mean(x: Sequence[float]) -> float:
    return math.fsum(x) / len(x) if x else math.nan


def std(x: Sequence[float]) -> float:
    """Sample standard deviation (ddof=1); NaN with fewer than 2 values."""
    if len(x) < 2:
        return math.nan
    m = mean(x)
    return math.sqrt(math.fsum((v - m) ** 2 for v in x) / (len(x) - 1))


def t_test(x: Sequence[float]) -> TTest:
    """One-sided one-sample t-test of mean(x) > 0; the same numbers as ``scipy.stats.ttest_1samp(x, 0,
    alternative="greater")``, computed directly because the simulations call it hundreds of thousands of times.

    Zero spread: a positive mean is certain (t=inf, p=0), a zero or negative one carries no evidence (p=1).
    """
    n = len(x)
    m = mean(x)
    if n < 2:
        return TTest(n, m, math.nan, math.nan, math.nan)
    s = std(x)
    if s == 0.0:
        t = math.inf if m > 0 else (-math.inf if m < 0 else math.nan)
        return TTest(n, m, 0.0, t, 0.0 if m > 0 else 1.0)
    t = m / (s / math.sqrt(n))
    return TTest(n, m, s, t, float(stdtr(n - 1, -t)))


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, tuple[float, float] | None]:
    """The mean and its Student-t interval over seeds (None with fewer than 2 values)."""
    m = mean(values)
    if len(values) < 2:
        return m, None
    half = float(stdtrit(len(values) - 1, 0.5 + level / 2)) * std(values) / math.sqrt(len(values))
    return m, (m - half, m + half)


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> tuple[list[int], list[float], list[float]]:
    """The seeds both sides have, in order, and each side's values on them."""
    common = sorted(set(a) & set(b))
    return common, [a[s] for s in common], [b[s] for s in common]


def noise_floor(losses: Sequence[float]) -> float:
    """σ: the sample standard deviation (ddof=1) of the reference variant's final loss over seeds.

    Non-finite losses are left out (a diverged run says nothing about seed-to-seed spread); at least 2 finite
    losses are required (ValueError otherwise).
    """
    finite = [float(v) for v in losses if math.isfinite(v)]
    if len(finite) < 2:
        raise ValueError(f"the noise floor needs at least 2 finite losses, got {len(finite)} of {len(losses)}")
    return std(finite)


def noise_floor_on(losses_by_seed: Mapping[int, float], seeds: Sequence[int]) -> float | None:
    """σ over the given seeds (the spec's tournament seeds): what every decision and every caption uses.
    None while fewer than 2 of those seeds have a finite loss."""
    try:
        return noise_floor([losses_by_seed[s] for s in seeds if s in losses_by_seed])
    except ValueError:
        return None
