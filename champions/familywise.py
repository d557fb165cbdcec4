"""The tournament decision: at most one promotion per tournament, with P(any false promotion) ≤ α. Pure: no I/O.

Testing every challenger whose mean beats the champion at α, on the very seeds that made it look good, promotes
one of ten equal challengers far more often than α. So a tournament is decided in two stages (docs/champion-policy.md
has the reasoning, the bound and the simulated rates):

1. **Screening on the tournament seeds S** (``n_start``). ``d = L_champion − L_challenger`` per seed (positive: the
   challenger is better; a non-finite d is a loss for the challenger, as in ``policy``). The candidates are the
   ``max_candidates`` best by mean(d) among those with ``mean(d) > 0`` and ``mean(d) ≥ select_min·δ``. Screening
   may look at S freely: no test below uses S.
2. **Confirmation on fresh seeds F**: the ``n_fresh`` contest seeds past S (disjoint from S and from the tuning
   seeds); the champion's fresh runs are shared by all candidates. Per candidate, a one-sided paired t-test on F
   alone, its p raised to 1 when ``mean(d on F) < δ`` or when it was stopped as futile (mean ≤ 0 after
   ``futility_after`` fresh seeds). ``confirm="sequence"`` (default): candidates best first, each at the full α,
   stopping at the first not confirmed (fixed-sequence testing). ``confirm="holm"``: Holm's step-down over all
   candidates. The confirmed candidate with the best mean(d) over S ∪ F is promoted; other confirmed ones are
   recorded as confirmed but not crowned.

The bound: given S, the candidates and their order are fixed, and F is independent of S, so each fresh p-value is
valid (P(p ≤ u) ≤ u when the challenger is not better) conditional on the selection; raising a p-value to 1 keeps it
valid. Fixed-sequence testing and Holm both keep the family-wise error at α for valid p-values under any dependence
(the candidates share the champion's fresh runs), so P(confirm any challenger that is not better) ≤ α per tournament.

Longer than usual because the two stages, the bound they share and the messages that report them belong together;
split, the α accounting would be spread over modules.

Callers rely on: ``decide`` calls ``fresh(name, i)`` only for candidates, each ``(name, i)`` at most once, with
``i`` in ``range(n_fresh)`` increasing per name; a non-candidate is never confirmed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, Literal

from arena.champions.policy import Confirm, PolicySettings, _fmt, _penalize
from arena.champions.stats import mean_ci, t_test

ScreenReason = Literal[
    "candidate",  # goes on to the fresh seeds
    "not better",  # mean(d) ≤ 0 on the tournament seeds
    "below the threshold",  # 0 < mean(d) < select_min·δ
    "outranked",  # good enough, but max_candidates better ones were taken
]
ConfirmReason = Literal[
    "confirmed",  # p < its level and mean(d) ≥ δ on the fresh seeds
    "not significant",  # p ≥ its level (or Holm's step-down stopped before it)
    "under the margin",  # mean(d) < δ on the fresh seeds
    "not better",  # mean(d) ≤ 0 on all the fresh seeds
    "futile",  # mean(d) ≤ 0 after futility_after fresh seeds: stopped early
    "not tested",  # the fixed sequence stopped at an earlier candidate
    "too few seeds",  # fewer than 2 fresh seeds exist: nothing can be confirmed
]
Fresh = Callable[[str, int], float]


@dataclass(frozen=True)
class Screening:
    """One challenger on the tournament seeds. Statistics of the penalized d (see ``policy._penalize``); ``ci`` is
    the 95% interval of mean(d); ``rank`` 1 is the best mean(d) (ties by name); ``message`` is its one line."""

    name: str
    rank: int
    n: int
    mean: float
    std: float
    t: float
    p: float
    ci: tuple[float, float] | None
    n_failed: int
    candidate: bool
    reason: ScreenReason
    message: str
    d: tuple[float, ...]


@dataclass(frozen=True)
class Confirmation:
    """One candidate on the fresh seeds. ``order`` is its place in the screening order (1 = best); ``alpha`` the
    level its p was compared with (NaN when not tested); ``overall_mean`` is mean(d) over S ∪ F, which picks the
    winner among several confirmed. ``n`` fresh seeds were used (fewer when stopped as futile, 0 when not tested)."""

    name: str
    order: int
    n: int
    mean: float
    std: float
    t: float
    p: float
    ci: tuple[float, float] | None
    n_failed: int
    alpha: float
    confirmed: bool
    reason: ConfirmReason
    message: str
    d: tuple[float, ...]
    overall_mean: float


@dataclass(frozen=True)
class TournamentDecision:
    """The outcome of one tournament. ``winner`` is the challenger to crown (None: the champion holds);
    ``confirmed`` every confirmed candidate, best first; ``fresh_calls`` the challenger runs asked of ``fresh``;
    ``champion_fresh`` the fresh seeds the champion needed (its runs are shared: seeds ``0 .. champion_fresh − 1``)."""

    winner: str | None
    confirmed: tuple[str, ...]
    screening: tuple[Screening, ...]
    confirmations: tuple[Confirmation, ...]
    sigma: float
    delta: float
    alpha: float
    procedure: Confirm
    select_seeds: tuple[int, ...]
    fresh_seeds: tuple[int, ...]
    fresh_calls: int
    champion_fresh: int
    message: str

    @property
    def promoted(self) -> bool:
        return self.winner is not None

    def verdicts(self) -> dict[str, str]:
        """One line per challenger for the leaderboard's verdict column: its confirmation if it was a candidate,
        else its screening."""
        out = {s.name: s.message for s in self.screening}
        out.update({c.name: c.message for c in self.confirmations})
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data: tuples as lists, non-finite floats as None (``json.dumps(..., allow_nan=False)`` works)."""
        return {**_json(asdict(self)), "promoted": self.promoted, "verdicts": self.verdicts()}


def holm_levels(p_values: Sequence[float], alpha: float) -> tuple[float, ...]:
    """The level Holm's step-down compares each p-value with: ``α / (k − j)`` for the j-th smallest (j = 0, 1, ...;
    ties and NaN, which sorts last, keep their input order)."""
    k = len(p_values)
    levels = [0.0] * k
    for j, i in enumerate(_ascending(p_values)):
        levels[i] = alpha / (k - j)
    return tuple(levels)


def holm(p_values: Sequence[float], alpha: float) -> tuple[bool, ...]:
    """Holm's step-down at family-wise ``alpha``: reject the smallest p-values while ``p < α / (k − j)``, stopping at
    the first that is not (strict, like every test of ``policy``). NaN is never rejected."""
    levels = holm_levels(p_values, alpha)
    rejected = [False] * len(p_values)
    for i in _ascending(p_values):
        if not p_values[i] < levels[i]:
            break
        rejected[i] = True
    return tuple(rejected)


def fixed_sequence(p_values: Sequence[float], alpha: float) -> tuple[bool, ...]:
    """Fixed-sequence testing: in the given order, reject each ``p < alpha`` until the first that is not. The order
    must not depend on these p-values (here: the screening order, from other seeds)."""
    rejected: list[bool] = []
    for p in p_values:
        rejected.append(bool(p < alpha) and all(rejected))
    return tuple(rejected)


def screen(
    d_select: Mapping[str, Sequence[float]], sigma: float, settings: PolicySettings, seeds: Sequence[int] | None = None
) -> tuple[Screening, ...]:
    """Stage 1: every challenger on the tournament seeds, best mean(d) first, the candidates marked.

    ``d_select[name]`` is ``L_champion − L_challenger`` on each tournament seed (exactly ``n_start`` values, paired by
    seed; NaN/inf for a failed run). ``seeds`` names the seeds in the messages (default ``0 .. n_max − 1``).
    """
    _check_sigma(sigma)
    select_seeds, _ = _seed_split(settings, seeds)
    delta = settings.delta(sigma)
    threshold = settings.select_min * delta
    rows = []
    for name, d in d_select.items():
        raw = tuple(float(v) for v in d)
        if len(raw) != settings.n_start:
            raise ValueError(f"{name}: {len(raw)} differences, expected one per tournament seed ({settings.n_start})")
        rows.append((name, raw, _penalize(raw, delta)))
    rows.sort(key=lambda row: (-math.fsum(row[2]), row[0]))
    where = f"on seeds {_label(select_seeds)}"
    out: list[Screening] = []
    taken = 0
    for rank, (name, raw, penalized) in enumerate(rows, start=1):
        st = t_test(penalized)
        nums = f"mean(d)={_fmt(st.mean)}, p={_fmt(st.p)} {where}{_failed_note(raw)}"
        reason: ScreenReason
        if st.mean <= 0:
            reason, text = "not better", f"not a candidate: not better than the champion, {nums}"
        elif st.mean < threshold:
            reason = "below the threshold"
            text = f"not a candidate: mean(d) < {settings.select_min:g}·δ = {_fmt(threshold)}; {nums}"
        elif taken >= settings.max_candidates:
            reason = "outranked"
            text = f"not a candidate: rank {rank}, only the best {settings.max_candidates} go on to fresh seeds; {nums}"
        else:
            taken += 1
            reason, text = "candidate", f"candidate {taken} (rank {rank}): {nums}"
        out.append(Screening(name, rank, st.n, st.mean, st.std, st.t, st.p, mean_ci(penalized)[1],
                             _failed(raw), reason == "candidate", reason, text, raw))
    return tuple(out)


def decide(
    d_select: Mapping[str, Sequence[float]],
    fresh: Fresh,
    sigma: float,
    settings: PolicySettings,
    seeds: Sequence[int] | None = None,
) -> TournamentDecision:
    """The whole tournament decision: :func:`screen`, then confirmation on fresh seeds, asked for lazily.

    ``fresh(name, i)`` returns d on the i-th fresh seed (``seeds[n_start + i]``; the caller trains both sides then).
    ``confirm="sequence"`` asks for candidates one after the other, best first, and stops asking at the first not
    confirmed; ``"holm"`` asks seed by seed across the candidates still running. Futile candidates stop early.
    ``seeds`` (e.g. ``spec.contest_seeds()``) only names seeds in the messages.
    """
    screening = screen(d_select, sigma, settings, seeds)
    select_seeds, fresh_seeds = _seed_split(settings, seeds)
    delta = settings.delta(sigma)
    candidates = [s for s in screening if s.candidate]
    fresh_d = _gather([s.name for s in candidates], fresh, delta, settings)
    tested = [s for s in candidates if s.name in fresh_d]
    p_eff = [_p_effective(fresh_d[s.name], delta, settings) for s in tested]
    if settings.confirm == "holm":
        rejected, levels = holm(p_eff, settings.alpha), holm_levels(p_eff, settings.alpha)
    else:
        rejected, levels = fixed_sequence(p_eff, settings.alpha), (settings.alpha,) * len(tested)
    by_name = {s.name: (rej, lvl) for s, rej, lvl in zip(tested, rejected, levels, strict=True)}
    overall = {
        s.name: (s.mean * s.n + math.fsum(_penalize(fresh_d[s.name], delta))) / (s.n + len(fresh_d[s.name]))
        for s in tested
    }
    confirmed = sorted((s for s in tested if by_name[s.name][0]), key=lambda s: -overall[s.name])
    winner = confirmed[0].name if confirmed else None  # sorted() is stable: ties go to the better screening rank
    context = _Context(settings, delta, fresh_seeds, select_seeds, winner, overall)
    blocker = next((s.name for s in tested if not by_name[s.name][0]), None)
    confirmations = tuple(
        _confirmation(s, order, fresh_d.get(s.name), by_name.get(s.name), blocker, context)
        for order, s in enumerate(candidates, start=1)
    )
    champion_fresh = max((len(v) for v in fresh_d.values()), default=0)
    decision = TournamentDecision(
        winner=winner, confirmed=tuple(s.name for s in confirmed), screening=screening, confirmations=confirmations,
        sigma=sigma, delta=delta, alpha=settings.alpha, procedure=settings.confirm, select_seeds=select_seeds,
        fresh_seeds=fresh_seeds, fresh_calls=sum(len(v) for v in fresh_d.values()), champion_fresh=champion_fresh,
        message="",
    )
    return _with_summary(decision, settings)


# -- stage 2 helpers ------------------------------------------------------------------------------------------


def _gather(names: Sequence[str], fresh: Fresh, delta: float, settings: PolicySettings) -> dict[str, list[float]]:
    """The candidates' fresh differences, as the procedure needs them: a name missing from the result was not tested.

    ``sequence`` asks for one candidate after the other and stops at the first that cannot be confirmed (later ones
    are never tested, so their runs are never trained); ``holm`` needs every candidate's p-value."""
    if settings.n_fresh < 2:
        return {name: [] for name in names}  # nothing can be confirmed: ask for nothing
    if settings.confirm == "holm":
        return _collect_all(names, fresh, delta, settings)
    out: dict[str, list[float]] = {}
    for name in names:
        out[name] = _collect(partial(fresh, name), delta, settings)
        if _p_effective(out[name], delta, settings) >= settings.alpha:
            break
    return out


def _collect(next_d: Callable[[int], float], delta: float, settings: PolicySettings) -> list[float]:
    """One candidate's fresh differences, seed by seed, stopping early when futile."""
    d: list[float] = []
    for i in range(settings.n_fresh):
        d.append(float(next_d(i)))
        if _futile(d, delta, settings):
            break
    return d


def _collect_all(names: Sequence[str], fresh: Fresh, delta: float, settings: PolicySettings) -> dict[str, list[float]]:
    """Every candidate's fresh differences, seed index outermost (the champion's run on a seed serves all), each
    candidate stopping early when futile."""
    d: dict[str, list[float]] = {name: [] for name in names}
    running = list(names)
    for i in range(settings.n_fresh):
        for name in running:
            d[name].append(float(fresh(name, i)))
        running = [name for name in running if not _futile(d[name], delta, settings)]
    return d


def _futile(d: Sequence[float], delta: float, settings: PolicySettings) -> bool:
    """Stop early: mean(d) ≤ 0 after ``futility_after`` fresh seeds, while fresh seeds remain. Only ever removes a
    chance to confirm (its p counts as 1), so it cannot raise the error rate."""
    n = len(d)
    return settings.futility_after <= n < settings.n_fresh and math.fsum(_penalize(d, delta)) <= 0


def _p_effective(d: Sequence[float], delta: float, settings: PolicySettings) -> float:
    """The p-value the family-wise procedure sees: the t-test's, or 1 when the candidate cannot be confirmed anyway
    (stopped early, mean(d) < δ or ≤ 0, fewer than 2 seeds). Raising p keeps it valid."""
    if len(d) < max(2, settings.n_fresh):
        return 1.0
    st = t_test(_penalize(d, delta))
    return st.p if st.mean > 0 and st.mean >= delta and math.isfinite(st.p) else 1.0


@dataclass(frozen=True)
class _Context:
    settings: PolicySettings
    delta: float
    fresh_seeds: tuple[int, ...]
    select_seeds: tuple[int, ...]
    winner: str | None
    overall: Mapping[str, float]


def _confirmation(
    s: Screening, order: int, d: Sequence[float] | None, outcome: tuple[bool, float] | None, blocker: str | None,
    ctx: _Context,
) -> Confirmation:
    """The record of one candidate's confirmation, with its one-line verdict."""
    settings, delta = ctx.settings, ctx.delta
    raw = tuple(d or ())
    penalized = _penalize(raw, delta)
    st = t_test(penalized)
    ci = mean_ci(penalized)[1]
    confirmed, level = outcome if outcome is not None else (False, math.nan)
    where = f"fresh seeds {_label(ctx.fresh_seeds[: len(raw)])}"
    holm_tag = "Holm " if settings.confirm == "holm" else ""
    nums = f"p={_fmt(st.p)}, mean(d)={_fmt(st.mean)}, δ={_fmt(delta)}{_failed_note(raw)}"
    reason: ConfirmReason
    if settings.n_fresh < 2:
        reason = "too few seeds"
        text = f"not confirmed: {settings.n_fresh} fresh seed(s) past the tournament's; a t-test needs 2 (max_seeds)"
    elif outcome is None:
        reason = "not tested"
        text = (
            f"not confirmed: not tested, the sequence (best first, each at α={_fmt(settings.alpha)}) stopped at "
            f"{blocker}"
        )
    elif confirmed:
        reason = "confirmed"
        head = "PROMOTED" if s.name == ctx.winner else "confirmed but not crowned"
        text = (
            f"{head}: confirmed on {where}: p={_fmt(st.p)} < {holm_tag}α={_fmt(level)}, mean(d)={_fmt(st.mean)} "
            f"≥ δ={_fmt(delta)}{_failed_note(raw)}"
        )
        if ctx.winner is not None and s.name != ctx.winner:
            n_all = len(ctx.select_seeds) + len(raw)
            text += (
                f"; {ctx.winner} has the better mean(d) over all {n_all} seeds "
                f"({_fmt(ctx.overall[ctx.winner])} vs {_fmt(ctx.overall[s.name])})"
            )
    elif len(raw) < settings.n_fresh:
        reason = "futile"
        text = f"not confirmed: mean(d)={_fmt(st.mean)} ≤ 0 after {where}; stopped early{_failed_note(raw)}"
    elif st.mean <= 0:
        reason, text = "not better", f"not confirmed on {where}: not better than the champion, {nums}"
    elif st.mean < delta:
        reason, text = "under the margin", f"not confirmed on {where}: mean(d) < δ; {nums}"
    elif st.p < level:
        reason = "not significant"
        text = (
            f"not confirmed on {where}: Holm's step-down stopped at a smaller p before reaching α={_fmt(level)}; "
            f"{nums}"
        )
    else:
        reason, text = "not significant", f"not confirmed on {where}: p ≥ {holm_tag}α={_fmt(level)}; {nums}"
    return Confirmation(
        name=s.name, order=order, n=len(raw), mean=st.mean, std=st.std, t=st.t, p=st.p, ci=ci, n_failed=_failed(raw),
        alpha=level, confirmed=confirmed, reason=reason, message=text, d=raw,
        overall_mean=ctx.overall.get(s.name, math.nan),
    )


def _with_summary(decision: TournamentDecision, settings: PolicySettings) -> TournamentDecision:
    """The decision with its one-line ``message``."""
    k = sum(s.candidate for s in decision.screening)
    m = len(decision.screening)
    if decision.winner is not None:
        line = next(c.message for c in decision.confirmations if c.name == decision.winner)
        text = (
            f"{decision.winner} dethrones the champion ({line.removeprefix('PROMOTED: ')}); "
            f"{len(decision.confirmed)} of {k} candidate(s) confirmed, {m} challenger(s) screened"
        )
    elif m == 0:
        text = "champion holds: no challengers"
    elif k == 0:
        threshold = settings.select_min * decision.delta
        text = (
            f"champion holds: no candidate among {m} challenger(s) on seeds {_label(decision.select_seeds)} "
            f"(a candidate needs mean(d) > 0 and ≥ {_fmt(threshold)})"
        )
    else:
        text = f"champion holds: none of {k} candidate(s) confirmed on fresh seeds {_label(decision.fresh_seeds)}"
    return replace(decision, message=text)


# -- small helpers --------------------------------------------------------------------------------------------


def _check_sigma(sigma: float) -> None:
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")


def _seed_split(settings: PolicySettings, seeds: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(tournament seeds, fresh seeds) as named in messages."""
    named = tuple(range(settings.n_max)) if seeds is None else tuple(int(s) for s in seeds)
    if len(named) < settings.n_max:
        raise ValueError(f"{len(named)} seeds named, expected n_max={settings.n_max} (spec.contest_seeds())")
    return named[: settings.n_start], named[settings.n_start : settings.n_max]


def _label(seeds: Sequence[int]) -> str:
    """``5–9`` for a run of consecutive seeds, else ``5, 7, 9``."""
    if len(seeds) > 1 and list(seeds) == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(str(s) for s in seeds) or "(none)"


def _ascending(p_values: Sequence[float]) -> list[int]:
    return sorted(range(len(p_values)), key=lambda i: p_values[i] if not math.isnan(p_values[i]) else math.inf)


def _failed(d: Sequence[float]) -> int:
    return sum(1 for v in d if not math.isfinite(v))


def _failed_note(d: Sequence[float]) -> str:
    n = _failed(d)
    return f"; {n} non-finite seed(s) counted as losses" if n else ""


def _json(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json(v) for v in obj]
    return obj
