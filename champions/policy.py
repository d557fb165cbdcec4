"""The promotion policy: when a challenger's evidence is strong enough to dethrone the champion. Pure: no I/O.

The rule (docs/champion-policy.md has the reasoning and the simulated error rates):

* ``d_s = L_champion(s) − L_challenger(s)`` per seed ``s``, both trained on the same seed of the same spec
  (paired). Positive ``d`` means the challenger's final validation loss is lower.
* Promote at a look with ``n`` seeds only if a one-sided paired t-test of ``d`` against 0 gives
  ``p < alpha_at(n)`` **and** ``mean(d) ≥ δ`` with ``δ = max(margin, σ)``, σ the spec's noise floor.
* Looks: ``looks(n_start, n_max, n_looks)`` — by default seeds 5, 7 and 10. The family-wise α is split evenly
  over the looks (Bonferroni), so however the contest decides to extend, the chance of promoting an equal
  challenger is at most ``alpha``.
* A borderline verdict (every failing criterion near its threshold) adds seeds up to the next look; a challenger
  whose mean difference is ≤ 0 after ``futility_after`` seeds is stopped early ("futile").
* A non-finite ``d`` (a diverged or crashed run on either side) counts as the challenger losing that seed.

Callers rely on: ``evaluate`` and ``run_contest`` never promote unless both criteria hold at a scheduled look;
``run_contest`` calls ``next_d`` with seed indices 0, 1, 2, ... in order and never more than ``n_max`` times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from arena.champions.stats import t_test
from arena.core.errors import ArenaError

Action = Literal["promote", "reject", "more_seeds"]
Confirm = Literal["sequence", "holm"]
Reason = Literal[
    "promoted",  # both criteria hold at a look
    "not better",  # mean(d) ≤ 0 at a look: the challenger's loss is not lower
    "futile",  # mean(d) ≤ 0 after futility_after seeds, before/between looks: stopped early
    "not significant",  # p ≥ α at the look (and not borderline, or no seeds left)
    "under the margin",  # significant, but mean(d) < δ (and not borderline, or no seeds left)
    "too few seeds",  # a final decision was asked for with fewer than 2 seeds
    "borderline",  # more_seeds: near the thresholds at a look, extending to the next look
    "collecting",  # more_seeds: not at a look yet
]

# A non-finite d is replaced by a loss of at least this much even when δ and every finite d are 0, so that a
# failed seed is always strictly a loss, never a tie.
_MIN_PENALTY = 1e-12


def looks(n_start: int, n_max: int, n_looks: int = 3) -> tuple[int, ...]:
    """The seed counts at which the t-test is run: ``n_looks`` points spread evenly over ``[n_start, n_max]``.

    Starts at ``n_start`` and ends at ``n_max`` (a single look is just ``n_start``: never extended); rounded
    down and de-duplicated, so there may be fewer than ``n_looks`` looks when the range is short.
    ``looks(5, 10) == (5, 7, 10)``, ``looks(3, 6) == (3, 4, 6)``, ``looks(5, 5) == (5,)``. The schedule depends
    only on the settings, never on data: that is what makes the Bonferroni split valid.
    """
    if not 1 <= n_start <= n_max:
        raise ArenaError(f"looks need 1 <= n_start <= n_max, got n_start={n_start}, n_max={n_max}")
    if n_looks < 1:
        raise ArenaError(f"n_looks must be >= 1, got {n_looks}")
    if n_looks == 1 or n_start == n_max:
        return (n_start,)  # a single look: a fixed-size test on the spec's seeds, never extended
    step = (n_max - n_start) / (n_looks - 1)
    points = {n_start + math.floor(k * step) for k in range(n_looks - 1)} | {n_max}
    return tuple(sorted(points))


@dataclass(frozen=True)
class PolicySettings:
    """The knobs of the policy. Frozen; invalid values raise ArenaError when constructed.

    ``n_start`` is the spec's tournament seed count and ``n_max`` its ``max_seeds`` (the registry copies them from
    the spec). ``n_looks`` sets the look schedule (see :func:`looks`); ``n_looks = n_max - n_start + 1`` looks at
    every seed, at the price of a smaller α per look. ``max_candidates``, ``select_min`` and ``confirm`` drive the
    tournament decision (:mod:`arena.champions.familywise`), which confirms on the ``n_fresh = n_max − n_start``
    seeds past the tournament's; there ``alpha`` bounds the chance of any false promotion in the whole tournament.
    """

    alpha: float = 0.01  # family-wise: P(promote an equal challenger) ≤ alpha over the whole contest
    margin: float = 0.005  # nats: the least improvement worth a champion change, whatever the noise
    borderline_p: float = 0.1  # a look with α_look ≤ p < borderline_p is borderline on significance
    n_start: int = 5
    n_max: int = 10
    futility_after: int = 3
    n_looks: int = 3
    # The tournament decision (``champions.familywise``): which challengers go on to fresh seeds, and how.
    max_candidates: int = 3  # at most this many challengers, best mean(d) on the tournament seeds first
    select_min: float = 0.5  # a candidate's mean(d) on the tournament seeds must be ≥ select_min·δ (and > 0)
    confirm: Confirm = "sequence"  # "sequence": fixed order, full α each; "holm": Holm's step-down over candidates

    def __post_init__(self) -> None:
        checks: list[tuple[bool, str]] = [
            (0 < self.alpha < 1, f"alpha must lie in (0, 1), got {self.alpha}"),
            (math.isfinite(self.margin) and self.margin >= 0, f"margin must be >= 0, got {self.margin}"),
            (self.alpha <= self.borderline_p < 1, f"borderline_p must lie in [alpha, 1), got {self.borderline_p}"),
            (self.n_start >= 2, f"n_start must be >= 2 (a t-test needs 2 seeds), got {self.n_start}"),
            (self.n_max >= self.n_start, f"n_max ({self.n_max}) must be >= n_start ({self.n_start})"),
            (self.futility_after >= 1, f"futility_after must be >= 1, got {self.futility_after}"),
            (self.n_looks >= 1, f"n_looks must be >= 1, got {self.n_looks}"),
            (self.max_candidates >= 1, f"max_candidates must be >= 1, got {self.max_candidates}"),
            (math.isfinite(self.select_min) and self.select_min >= 0,
             f"select_min must be finite and >= 0, got {self.select_min}"),
            (self.confirm in ("sequence", "holm"), f"confirm must be 'sequence' or 'holm', got {self.confirm!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ArenaError(message)

    @property
    def schedule(self) -> tuple[int, ...]:
        """The look schedule: ``looks(n_start, n_max, n_looks)``."""
        return looks(self.n_start, self.n_max, self.n_looks)

    def alpha_at(self, n: int) -> float:
        """The α spent by the test at ``n`` seeds: ``alpha / len(schedule)`` at a look, 0 elsewhere."""
        schedule = self.schedule
        return self.alpha / len(schedule) if n in schedule else 0.0

    @property
    def n_fresh(self) -> int:
        """The fresh seeds a tournament's candidates are confirmed on: the contest seeds past the tournament's."""
        return self.n_max - self.n_start

    def delta(self, sigma: float) -> float:
        """The promotion threshold on mean(d): ``max(margin, sigma)``."""
        return max(self.margin, sigma)


@dataclass(frozen=True)
class Verdict:
    """One decision. ``action`` is what to do; ``reason`` is the short why; ``message`` one line with the numbers.

    ``d`` holds the differences as given (non-finite kept); ``n_failed`` counts the non-finite ones, which the
    statistics (``mean``, ``std``, ``t``, ``p``) counted as losses for the challenger. ``t`` and ``p`` are NaN
    when fewer than 2 seeds were seen. ``alpha_look`` is the α of the test behind this verdict (0 if no test).
    """

    action: Action
    reason: Reason
    n: int
    mean: float
    std: float
    t: float
    p: float
    delta: float
    alpha_look: float
    d: tuple[float, ...]
    message: str
    sigma: float = 0.0
    n_failed: int = 0

    @property
    def promoted(self) -> bool:
        return self.action == "promote"


def _penalize(d: Sequence[float], delta: float, *, failed_sign: Sequence[float] | None = None) -> list[float]:
    """Replace each non-finite entry of ``d`` by a loss of ``max(δ, max |finite d|)``.

    The size is the largest difference actually seen (and at least δ), so a failed seed weighs like the challenger's
    worst plausible defeat without inventing an extreme outlier. ``failed_sign`` (±1 per entry) says which side lost
    a non-finite seed; by default the challenger (−1).
    """
    finite = [abs(v) for v in d if math.isfinite(v)]
    size = max(delta, max(finite, default=0.0), _MIN_PENALTY)
    signs = failed_sign if failed_sign is not None else [-1.0] * len(d)
    return [v if math.isfinite(v) else s * size for v, s in zip(d, signs, strict=True)]


def _fmt(x: float) -> str:
    return f"{x:.4g}" if math.isfinite(x) else str(x)


def evaluate(d: Sequence[float], sigma: float, settings: PolicySettings, *, final: bool = False) -> Verdict:
    """The decision after ``len(d)`` seeds.

    * Fewer than ``futility_after`` seeds, or between looks: ``more_seeds`` ("collecting"), unless mean(d) ≤ 0
      with at least ``futility_after`` seeds: ``reject`` ("futile").
    * At a look ``n`` (``n in settings.schedule``): promote iff ``p < alpha_at(n)`` and ``mean(d) ≥ δ``. Else
      ``mean(d) ≤ 0`` → "not better"; borderline (every failing criterion near: ``p < borderline_p``,
      ``mean(d) ≥ δ − σ``) and a later look exists → ``more_seeds`` ("borderline"); else "not significant"
      (p failed) or "under the margin" (only the mean failed).
    * ``final=True``: no more seeds will come, so the verdict is never ``more_seeds``. Off the schedule the test
      spends the α of the next scheduled look (that look will never happen). ``final`` must not depend on ``d``
      (e.g. "the spec has no more seeds"), or the α accounting no longer holds.

    ``sigma`` is the noise floor (finite, ≥ 0). ``len(d)`` above ``n_max`` is a caller error (ValueError).

    Longer than usual because the rule reads as one ordered list of cases; split up, the α accounting of a look
    would be spread over several functions.
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    n = len(d)
    if n > settings.n_max:
        raise ValueError(f"{n} seeds is more than n_max={settings.n_max}")
    raw = tuple(float(v) for v in d)
    delta = settings.delta(sigma)
    n_failed = sum(1 for v in raw if not math.isfinite(v))
    stats = t_test(_penalize(raw, delta))
    schedule = settings.schedule
    failed_note = f"; {n_failed} non-finite seed(s) counted as losses" if n_failed else ""

    def verdict(action: Action, reason: Reason, alpha_look: float, text: str) -> Verdict:
        return Verdict(
            action=action,
            reason=reason,
            n=n,
            mean=stats.mean,
            std=stats.std,
            t=stats.t,
            p=stats.p,
            delta=delta,
            alpha_look=alpha_look,
            d=raw,
            message=f"{reason}: {text}{failed_note}",
            sigma=sigma,
            n_failed=n_failed,
        )

    m, p = _fmt(stats.mean), _fmt(stats.p)
    if n in schedule:
        alpha_look = settings.alpha_at(n)
    elif final:
        later = [k for k in schedule if k >= n]
        alpha_look = settings.alpha_at(later[0] if later else schedule[-1])
    else:
        alpha_look = 0.0

    if alpha_look == 0.0:  # not a look: only futility can end the contest here
        if n >= settings.futility_after and stats.mean <= 0:
            return verdict("reject", "futile", 0.0, f"mean(d)={m} ≤ 0 after {n} seeds; stopped early")
        return verdict(
            "more_seeds",
            "collecting",
            0.0,
            f"{n} seed(s) so far, mean(d)={m}; next look at "
            f"{min((k for k in schedule if k > n), default=settings.n_max)}",
        )
    if n < 2:
        return verdict("reject", "too few seeds", alpha_look, f"{n} seed(s); a paired t-test needs at least 2")

    a, dl = _fmt(alpha_look), _fmt(delta)
    nums = f"mean(d)={m}, sd={_fmt(stats.std)}, t={_fmt(stats.t)}, p={p}, α={a}, δ={dl}, {n} seeds"
    significant = stats.p < alpha_look
    big_enough = stats.mean >= delta
    if significant and big_enough:
        return verdict("promote", "promoted", alpha_look, f"p < α and mean(d) ≥ δ; {nums}")
    if stats.mean <= 0:
        return verdict("reject", "not better", alpha_look, f"the challenger's loss is not lower; {nums}")
    near_p = significant or stats.p < settings.borderline_p
    near_mean = big_enough or stats.mean >= delta - sigma
    later = [k for k in schedule if k > n]
    if near_p and near_mean and later and not final:
        why = f"near the thresholds, adding seeds up to {later[0]}; {nums}"
        return verdict("more_seeds", "borderline", alpha_look, why)
    if not significant:
        return verdict("reject", "not significant", alpha_look, f"p ≥ α; {nums}")
    return verdict(
        "reject",
        "under the margin",
        alpha_look,
        f"mean(d) < δ = max(margin {_fmt(settings.margin)}, σ {_fmt(sigma)}); {nums}",
    )


def run_contest(next_d: Callable[[int], float], sigma: float, settings: PolicySettings) -> Verdict:
    """The whole sequential contest: call ``next_d(i)`` for seed index ``i = 0, 1, ...`` and decide.

    ``next_d(i)`` returns ``L_champion − L_challenger`` on the i-th contest seed (NaN or inf for a failed run: it
    counts as the challenger losing). The contest stops at the first verdict that is not ``more_seeds``: futility
    from ``futility_after`` seeds on, a decision at each look of ``settings.schedule``, and a final decision at
    ``n_max`` at the latest. Returns that verdict; ``verdict.n`` is the number of calls made.
    """
    d: list[float] = []
    for i in range(settings.n_max):
        d.append(float(next_d(i)))
        v = evaluate(d, sigma, settings, final=len(d) == settings.n_max)
        if v.action != "more_seeds":
            return v
    raise AssertionError("unreachable: evaluate(final=True) always decides")  # pragma: no cover
