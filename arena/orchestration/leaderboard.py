"""The leaderboard of one spec: mean final val loss with a 95% CI over seeds, paired comparisons with the champion.

Only runs on the spec's contest seeds count (tuning runs train on disjoint seeds and are listed apart), only
``ok`` runs enter the means, and every comparison is paired on the seeds both sides finished.
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
from arena.db.store import Store, StoredRun

TIE_P = 0.05  # two-sided paired p-value above which an entry is marked statistically tied with the champion


@dataclass
class Row:
    name: str
    kind: str
    variant_sha: str
    hparams: dict[str, float]
    losses: dict[int, float]  # seed -> final val loss (ok runs only)
    statuses: Counter[str]
    params: int | None
    tok_s: float | None
    peak_mb: float | None
    mean: float | None = None
    ci: tuple[float, float] | None = None
    delta_pct: float | None = None  # (mean − champion mean) / champion mean on common seeds, in %
    p_value: float | None = None  # one-sided paired: this entry better than the champion
    is_champion: bool = False
    tied: bool = False
    rank: int | None = None
    run_ids: list[int] = field(default_factory=list)

    @property
    def n_seeds(self) -> int:
        return len(self.losses)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "variant": self.name, "kind": self.kind, "variant_sha": self.variant_sha,
            "hparams": self.hparams, "mean_val_loss": self.mean, "ci95": list(self.ci) if self.ci else None,
            "delta_vs_champion_pct": self.delta_pct, "p_vs_champion": self.p_value, "seeds": self.n_seeds,
            "params": self.params, "tok_s": self.tok_s, "peak_mb": self.peak_mb, "status": dict(self.statuses),
            "champion": self.is_champion, "tied_with_champion": self.tied, "losses": self.losses,
        }


@dataclass
class Board:
    spec_hash: str
    spec: Spec | None
    rows: list[Row]
    champion: str | None
    champion_by_default: bool
    noise_floor: float | None
    tuning: list[dict[str, Any]]


def noise_floor(rows: list[Row], spec: Spec | None) -> float | None:
    """σ as the champion decisions use it: the reference variant's spread over the spec's tournament seeds."""
    reference = spec.reference_variant if spec else "gf"
    ref = next((r for r in rows if r.name == reference), None)
    if ref is None:
        return None
    return stats.noise_floor_on(ref.losses, spec.seeds if spec else sorted(ref.losses))


def _group(runs: list[StoredRun], store: Store, spec: Spec | None) -> list[Row]:
    seeds = set(spec.contest_seeds()) if spec else None
    tuned = {(e.variant_sha, hparams_key(e.hparams)): e.name for e in store.entries()}
    latest = {v.name: v.sha256 for v in store.variants()}
    groups: dict[tuple[str, str], list[StoredRun]] = defaultdict(list)
    for run in runs:
        r = run.result
        if run.study_name is not None or (seeds is not None and r.seed not in seeds):
            continue
        groups[(r.variant_sha, hparams_key(r.hparams))].append(run)
    rows: list[Row] = []
    for (sha, hkey), members in groups.items():
        first = members[0].result
        variant = store.variant(sha)
        name = tuned.get((sha, hkey), first.variant)
        if (sha, hkey) not in tuned and latest.get(first.variant) not in (None, sha):
            name = f"{first.variant}~{sha[:7]}"  # an older version of a changed file
        ok = [m.result for m in members if m.result.status == "ok" and m.result.final_val_loss is not None]
        toks = [r.tokens_per_s for r in ok if r.tokens_per_s]
        mems = [r.peak_mem_mb for r in ok if r.peak_mem_mb]
        rows.append(
            Row(
                name=name, kind=variant.kind if variant else "?", variant_sha=sha, hparams=dict(first.hparams),
                losses={r.seed: float(r.final_val_loss) for r in ok if r.final_val_loss is not None},
                statuses=Counter(m.result.status for m in members),
                params=first.params_total, tok_s=float(np.median(toks)) if toks else None,
                peak_mb=float(max(mems)) if mems else None, run_ids=[m.id for m in members],
            )
        )
    return rows


def build(store: Store, spec_hash: str) -> Board:
    spec = store.spec(spec_hash)
    runs = store.runs(spec_hash)
    rows = _group(runs, store, spec)
    for row in rows:
        if row.losses:
            row.mean, row.ci = stats.mean_ci(list(row.losses.values()))
    decision = store.champion(spec_hash)
    champ_row = None
    if decision is not None:
        champ_row = next(
            (r for r in rows if r.variant_sha == decision.challenger_sha
             and hparams_key(r.hparams) == hparams_key(decision.challenger_hparams)),
            None,
        )
    if champ_row is not None:
        champ_row.is_champion = True
        for row in rows:
            if row is champ_row or not row.losses:
                continue
            _, a, b = stats.paired(champ_row.losses, row.losses)
            if not a:
                continue
            ma = stats.mean(a)
            row.delta_pct = 100.0 * (stats.mean(b) - ma) / ma
            if len(a) >= 2:
                test = stats.t_test([x - y for x, y in zip(a, b, strict=True)])  # champion − entry: > 0 is better
                row.p_value = test.p
                row.tied = test.p_two_sided >= TIE_P
    ranked = sorted(rows, key=lambda r: (r.mean is None, r.mean if r.mean is not None else 0.0, r.name))
    for i, row in enumerate(ranked, start=1):
        row.rank = i if row.mean is not None else None
    tuning = _tuning_summary(runs)
    return Board(
        spec_hash=spec_hash, spec=spec, rows=ranked, champion=champ_row.name if champ_row else None,
        champion_by_default=bool(decision and decision.by_default), tuning=tuning,
        noise_floor=noise_floor(rows, spec),
    )


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
            "best_val_loss": best.result.final_val_loss if best else None,
            "best_hparams": best.result.hparams if best else None,
        })
    return out
