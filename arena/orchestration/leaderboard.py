"""The leaderboard of one spec on one basis: every league's entries ranked on the seeds they all share.

What it compares, and only that:

* **one basis**: runs of one code digest on one stack (default: the last completed tournament's on this spec).
  Runs from other code are stale and runs from another stack are a different board; both are counted, never mixed.
* **one seed set**: the spec's tournament seeds, which every complete row has. A row's mean, CI and Δ are over those
  seeds only; runs on other seeds (contest confirmations, a one-off ``arena run --seed 7``) are shown apart as
  "extra" and never move the ranking. A row without every tournament seed is listed unranked, as incomplete.
* **one league at a time**: default hyperparameters, or one tuning budget; a tuned entry never ranks beside an
  untuned one.
* **Δ vs the champion** in nats: mean over seeds of (entry − champion), with the paired 95% Student-t interval;
  the verdict column is what the promotion rule decided for that entry in the league's last tournament on this basis
  (``champions.familywise``), never a separate uncorrected test. One statistics module computes every number.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from arena.champions import stats
from arena.core.result import hparams_key
from arena.core.spec import Spec
from arena.db.store import EntryRow, Store, StoredRun, TournamentRow, VariantRow


@dataclass
class Row:
    name: str
    kind: str
    league: str
    variant_sha: str
    hparams: dict[str, float]
    losses: dict[int, float]  # tournament seed -> final val loss (ok runs only)
    statuses: Counter[str]  # on the tournament seeds
    missing: list[int]  # tournament seeds with no run on this basis
    extra: dict[int, float]  # other seeds -> final val loss (ok runs; not in the ranking)
    params: int | None
    params_target: int | None  # None: unmatched (its file says match_params=False)
    tok_s: float | None
    peak_mb: float | None
    mean: float | None = None
    ci: tuple[float, float] | None = None
    delta: float | None = None  # mean(entry − champion) over the tournament seeds, nats
    delta_ci: tuple[float, float] | None = None  # paired 95% CI of delta
    verdict: str = "—"
    is_champion: bool = False
    rank: int | None = None
    run_ids: list[int] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return self.params_target is not None

    @property
    def deviation(self) -> float | None:
        """(params − target) / target; None for an unmatched row."""
        if self.params is None or self.params_target is None:
            return None
        return (self.params - self.params_target) / self.params_target

    @property
    def complete(self) -> bool:
        return not self.missing and sum(self.statuses.values()) > 0

    @property
    def n_failed(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != "ok")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "variant": self.name, "league": self.league, "kind": self.kind,
            "variant_sha": self.variant_sha, "hparams": self.hparams, "champion": self.is_champion,
            "mean_val_loss": self.mean, "ci95": list(self.ci) if self.ci else None,
            "delta_vs_champion": self.delta, "delta_ci95": list(self.delta_ci) if self.delta_ci else None,
            "verdict": self.verdict, "seeds": sorted(self.losses), "missing_seeds": self.missing,
            "losses": {str(k): v for k, v in sorted(self.losses.items())},
            "extra_seeds": {str(k): v for k, v in sorted(self.extra.items())},
            "params": self.params, "params_target": self.params_target, "params_deviation": self.deviation,
            "matched": self.matched, "tok_s": self.tok_s, "peak_mb": self.peak_mb, "status": dict(self.statuses),
        }


@dataclass
class League:
    name: str
    rows: list[Row]
    champion: str | None
    champion_by_default: bool
    tournament_id: int | None


@dataclass
class Board:
    spec_hash: str
    spec: Spec | None
    code_digest: str | None
    stack_id: str | None
    stack: dict[str, Any]
    ranking_seeds: tuple[int, ...]
    leagues: list[League]
    noise_floor: float | None
    stale_runs: int  # runs of this spec computed by other code (not shown)
    other_stacks: dict[str, int]  # stack id -> runs of this spec and code on another stack (not shown)
    tuning: list[dict[str, Any]]

    @property
    def rows(self) -> list[Row]:
        return [r for league in self.leagues for r in league.rows]


def default_basis(store: Store, spec_hash: str) -> TournamentRow | None:
    """The basis a board shows by default: the last completed tournament's on this spec."""
    done = store.tournaments(spec_hash, completed=True)
    return done[-1] if done else None


def build(store: Store, spec_hash: str, *, code: str | None = None, stack: str | None = None) -> Board:
    """The board of ``spec_hash`` on the given basis (default: the last completed tournament's; with none, the basis
    of the most recent run)."""
    spec = store.spec(spec_hash)
    runs = store.runs(spec_hash)
    last = default_basis(store, spec_hash)
    if code is None or stack is None:
        if last is not None:
            code, stack = code or last.code_digest, stack or last.stack_id
        elif runs:
            code, stack = code or runs[-1].result.code_digest, stack or runs[-1].result.stack_id
    stack_info: dict[str, Any] = last.stack if last is not None and last.stack_id == stack else {}
    if not stack_info:
        env: dict[str, Any] = next((r.result.env for r in reversed(runs) if r.result.stack_id == stack), {})
        stack_info = {k: env[k] for k in ("device", "gpu", "torch", "cuda") if env.get(k)}
    here = [r for r in runs if r.result.code_digest == code and r.result.stack_id == stack]
    stale = sum(1 for r in runs if r.result.code_digest != code)
    other = Counter(r.result.stack_id or "?" for r in runs
                    if r.result.code_digest == code and r.result.stack_id != stack)
    seeds = tuple(spec.seeds) if spec else tuple(sorted({r.result.seed for r in here}))
    # Entry names a default-league tournament ran on this basis: a tuned entry whose best trial is the defaults
    # shares their runs, and they stay in the default league too.
    plain = {n for t in store.tournaments(spec_hash) if t.league == "default" and t.code_digest == code
             and t.stack_id == stack for n in t.entries}
    rows = _group(here, store, spec, seeds, plain)
    sigma = _noise(rows, spec, seeds)
    leagues = []
    for name in sorted({r.league for r in rows}, key=lambda n: (n != "default", n == CUSTOM, n)):
        leagues.append(_league(store, spec_hash, name, [r for r in rows if r.league == name], code, stack))
    return Board(spec_hash=spec_hash, spec=spec, code_digest=code, stack_id=stack, stack=stack_info,
                 ranking_seeds=seeds, leagues=leagues, noise_floor=sigma, stale_runs=stale, other_stacks=dict(other),
                 tuning=_tuning_summary(here))


def _noise(rows: list[Row], spec: Spec | None, seeds: tuple[int, ...]) -> float | None:
    """σ as the champion decisions use it: the reference file's spread over the tournament seeds (this basis)."""
    reference = spec.reference_variant if spec else "gf"
    ref = next((r for r in rows if r.name == reference and r.league == "default"), None)
    return None if ref is None else stats.noise_floor_on(ref.losses, seeds)


CUSTOM = "custom"  # the league of runs whose hyperparameters were set by hand


def _group(runs: list[StoredRun], store: Store, spec: Spec | None, seeds: tuple[int, ...],
           plain: set[str]) -> list[Row]:
    """One row per entry over the runs of its (variant version, hparams); runs of no entry are the default
    league's, under the variant's name. Two entries of one computation share its runs, a row in each league: a
    tuned entry whose best trial is the defaults (``cp@tuned-30`` = ``cp``) also leaves ``cp``'s default row. The
    defaults are those the version declares (stored with it); for a version stored before they were, the rule is
    inferred: ``cp`` ran in a default-league tournament (``plain``) and no other group of that version is
    ``cp``'s."""
    entries: dict[tuple[str, str], list[EntryRow]] = defaultdict(list)
    for e in store.entries():
        entries[(e.variant_sha, hparams_key(e.hparams))].append(e)
    latest = {v.name: v.sha256 for v in store.variants()}
    tuning = set(spec.tuning_seeds) if spec else set()
    groups: dict[tuple[str, str], list[StoredRun]] = defaultdict(list)
    for run in runs:
        if run.study_name is not None or run.result.seed in tuning:
            continue  # search runs train on the tuning seeds and score on the tuning split: listed apart
        groups[(run.result.variant_sha, hparams_key(run.result.hparams))].append(run)
    unclaimed = {sha for (sha, hkey) in groups if (sha, hkey) not in entries}  # versions with a plain group
    declared = {sha: store.variant(sha) for sha, _ in groups}
    rows: list[Row] = []
    for (sha, hkey), members in groups.items():
        first = members[0].result
        names = [(e.name, e.league) for e in entries.get((sha, hkey), [])]
        version = declared[sha]
        defaults = version.defaults if version is not None else None
        if defaults is not None:
            is_default = hkey == hparams_key(defaults)
        else:  # stored before the defaults were: inferred
            is_default = first.variant in plain and sha not in unclaimed
        if names and is_default and all(lg != "default" for _, lg in names):
            names.append((first.variant, "default"))
        if not names:
            name = first.variant
            if latest.get(first.variant) not in (None, sha):
                name = f"{first.variant}~{sha[:7]}"  # an older version of a changed file
            league = "default"
            if defaults is not None and not is_default:
                # Set by hand (``arena run --hp``): neither the defaults nor a tuned entry's, so never ranked
                # against either; named by what differs.
                changed = {k: v for k, v in first.hparams.items() if defaults.get(k) != v}
                name = f"{name}[{','.join(f'{k}={v:g}' for k, v in sorted(changed.items()))}]"
                league = CUSTOM
            names = [(name, league)]
        rows += [_row(version, sha, members, seeds, name, league) for name, league in names]
    return rows


def _row(variant: VariantRow | None, sha: str, members: list[StoredRun], seeds: tuple[int, ...], name: str,
         league: str) -> Row:
    first = members[0].result
    in_set = [m.result for m in members if m.result.seed in seeds]
    ok = [r for r in in_set if r.status == "ok" and r.final_val_loss is not None]
    toks = [r.tokens_per_s for r in ok if r.tokens_per_s]
    mems = [r.peak_mem_mb for r in ok if r.peak_mem_mb]
    return Row(
        name=name, kind=variant.kind if variant else "?", league=league, variant_sha=sha,
        hparams=dict(first.hparams), losses={r.seed: float(r.final_val_loss) for r in ok if r.final_val_loss},
        statuses=Counter(r.status for r in in_set),
        missing=[s for s in seeds if s not in {r.seed for r in in_set}],
        extra={m.result.seed: float(m.result.final_val_loss) for m in members
               if m.result.seed not in seeds and m.result.status == "ok" and m.result.final_val_loss is not None},
        params=first.params_total, params_target=first.params_target,
        tok_s=float(np.median(toks)) if toks else None, peak_mb=float(max(mems)) if mems else None,
        run_ids=[m.id for m in members],
    )


def _league(store: Store, spec_hash: str, name: str, rows: list[Row], code: str | None,
            stack: str | None) -> League:
    for row in rows:
        if row.complete and row.n_failed == 0:
            row.mean, row.ci = stats.mean_ci([row.losses[s] for s in sorted(row.losses)])
    decision = store.champion(spec_hash, name)
    champ = None
    if decision is not None:
        champ = next((r for r in rows if r.variant_sha == decision.challenger_sha
                      and hparams_key(r.hparams) == hparams_key(decision.challenger_hparams)), None)
    if champ is not None:
        champ.is_champion = True
        for row in rows:
            if row is champ or row.mean is None or champ.mean is None:
                continue
            _, a, b = stats.paired(row.losses, champ.losses)
            row.delta, row.delta_ci = stats.mean_ci([x - y for x, y in zip(a, b, strict=True)])
    verdicts = _verdicts(store, spec_hash, name, code, stack)
    for row in rows:
        row.verdict = "champion" if row.is_champion else verdicts.get(row.name, _why_undecided(row))
    # Complete rows by mean; then rows with a failed tournament seed; then incomplete ones (unranked).
    ranked = sorted(rows, key=lambda r: (r.mean is None, not r.complete, r.mean if r.mean is not None else 0.0, r.name))
    for i, row in enumerate(ranked, start=1):
        row.rank = i if row.mean is not None else None
    return League(name=name, rows=ranked, champion=champ.name if champ else None,
                  champion_by_default=bool(decision and decision.by_default),
                  tournament_id=decision.tournament_id if decision else None)


def _verdicts(store: Store, spec_hash: str, league: str, code: str | None, stack: str | None) -> dict[str, str]:
    """Entry → what the league's last completed tournament on this basis decided for it."""
    done = [t for t in store.tournaments(spec_hash, completed=True)
            if t.league == league and t.code_digest == code and t.stack_id == stack]
    if not done:
        return {}
    out = {}
    for o in done[-1].outcome or []:
        if o.get("entry"):
            out[o["entry"]] = str(o["message"]).removeprefix(f"{o['entry']}: ")
    return out


def _why_undecided(row: Row) -> str:
    if not row.matched:
        return "unmatched: never crowned over a matched entry"
    if row.missing:
        return f"incomplete: seeds {','.join(map(str, row.missing))} not run on this basis"
    if row.n_failed:
        return f"{row.n_failed} failed seed(s)"
    return "not decided on this basis yet"


def _tuning_summary(runs: list[StoredRun]) -> list[dict[str, Any]]:
    by_study: dict[str, list[StoredRun]] = defaultdict(list)
    for run in runs:
        if run.study_name is not None:
            by_study[run.study_name].append(run)
    out = []
    for study, members in sorted(by_study.items()):
        ok = [m for m in members if m.result.status == "ok" and m.result.final_val_loss is not None]
        best = min(ok, key=lambda m: float(m.result.final_val_loss or math.inf), default=None)
        out.append({
            "study": study, "runs": len(members), "ok": len(ok),
            "best_tuning_loss": best.result.final_val_loss if best else None,
            "best_hparams": best.result.hparams if best else None,
        })
    return out
