"""What ``arena show A B C --plot`` compares, and what ``--json`` / ``--curves`` export.

A comparison holds only what the leaderboard would pair: runs of its basis (one code digest on one stack, default the
last completed tournament's, ``arena.orchestration.leaderboard.build``) on the spec's tournament seeds, ok runs only.
Every mean and interval comes from ``arena.champions.stats``, so a figure never disagrees with a table.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from arena.champions import stats
from arena.core.errors import ArenaError
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.db.store import Store, StoredRun
from arena.orchestration.leaderboard import Row, build

CURVE_FIELDS = ("run_id", "variant", "seed", "split", "step", "loss")


@dataclass(frozen=True)
class Series:
    """One named entry on the basis: its ok runs on the tournament seeds, in seed order."""

    name: str
    league: str
    runs: tuple[RunResult, ...]
    n_seeds: int  # how many tournament seeds the spec has (a label says "2/3 seeds" when some are missing)

    @property
    def losses(self) -> dict[int, float]:
        return {r.seed: float(r.final_val_loss) for r in self.runs if r.final_val_loss is not None}

    def mean_ci(self) -> tuple[float, tuple[float, float] | None]:
        return stats.mean_ci([self.losses[s] for s in sorted(self.losses)])

    def val_band(self) -> tuple[list[int], list[float], list[float], list[float]]:
        """The steps every run evaluated at, with the mean, min and max val loss over the seeds at each."""
        curves = [dict(r.val_curve) for r in self.runs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        at = [[c[step] for c in curves] for step in steps]
        return steps, [stats.mean(v) for v in at], [min(v) for v in at], [max(v) for v in at]


@dataclass(frozen=True)
class Paired:
    """``name`` − reference per shared seed (nats; negative: ``name`` is better), with the mean and its 95% CI."""

    name: str
    seeds: list[int]
    diffs: list[float]
    mean: float
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class Comparison:
    spec: Spec
    basis: str  # e.g. "code 1a2b3c4d · stack 5e6f7a8b (cpu)"
    series: tuple[Series, ...]
    reference: Series  # what ``paired`` takes differences against
    reference_role: str  # "champion", "--vs" or "first named"

    def paired(self) -> list[Paired]:
        out = []
        for s in self.series:
            if s.name == self.reference.name:
                continue
            seeds, a, b = stats.paired(s.losses, self.reference.losses)
            diffs = [x - y for x, y in zip(a, b, strict=True)]
            mean, ci = stats.mean_ci(diffs)
            out.append(Paired(s.name, seeds, diffs, mean, ci))
        return out


def compare(store: Store, spec_hash: str, names: Sequence[str], vs: str | None = None) -> Comparison:
    """The named entries (variant or entry names, as the leaderboard names its rows) on the leaderboard's basis and
    the spec's tournament seeds. The paired reference: ``vs``, else the champion of the first name's league, else the
    first name. ArenaError (one line) for a name with no ok run there."""
    from arena.core.config import did_you_mean

    board = build(store, spec_hash)
    spec = board.spec or store.spec(spec_hash)
    if spec is None or board.code_digest is None or board.stack_id is None:
        raise ArenaError(f"spec {spec_hash[:8]} has no runs to compare yet; run: arena tournament")
    where = board.stack.get("gpu") or board.stack.get("device") or "?"
    basis = f"code {board.code_digest[:8]} · stack {board.stack_id[:8]} ({where})"
    rows: dict[str, Row] = {}
    for row in board.rows:
        rows.setdefault(row.name, row)
    on_basis = {s.id: s.result for s in store.runs(spec_hash, code_digest=board.code_digest, stack_id=board.stack_id)}
    seeds = set(spec.seeds)

    def series(name: str) -> Series:
        row = rows.get(name)
        if row is None:
            raise ArenaError(f"'{name}' has no runs on {basis} of spec {spec.label}{did_you_mean(name, rows)} "
                             "(only the leaderboard's basis is compared; see: arena leaderboard)")
        runs = sorted((on_basis[i] for i in row.run_ids if i in on_basis), key=lambda r: r.seed)
        ok = tuple(r for r in runs if r.seed in seeds and r.status == "ok" and r.final_val_loss is not None)
        if not ok:
            raise ArenaError(f"'{name}' has no ok run on the tournament seeds {','.join(map(str, spec.seeds))} "
                             f"on {basis}; run: arena tournament --variants {name}")
        return Series(name, row.league, ok, len(spec.seeds))

    named = tuple(series(n) for n in dict.fromkeys(names))
    champion = next((lg.champion for lg in board.leagues if lg.name == named[0].league), None)
    if vs is not None:
        reference, role = series(vs), "--vs"
    elif champion is not None:
        reference, role = series(champion), "champion"
    else:
        reference, role = named[0], "first named"
    return Comparison(spec, basis, named, reference, role)


# -- export -------------------------------------------------------------------------------------------------------
def run_record(stored: StoredRun, *, basis: tuple[str | None, str | None], seeds: Sequence[int]) -> dict[str, Any]:
    """A stored run as JSON-ready data: its id and key, the whole result (curves and diagnostics included), and
    whether the comparison would use it (``on_basis``, ``tournament_seed``)."""
    r = stored.result
    return {"id": stored.id, "key": stored.key, "created": stored.created.isoformat(),
            "study_name": stored.study_name, "trial_number": stored.trial_number,
            "on_basis": (r.code_digest, r.stack_id) == basis, "tournament_seed": r.seed in seeds, **r.to_dict()}


def as_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, default=str, allow_nan=True) + "\n"


def curve_rows(runs: Sequence[StoredRun]) -> list[dict[str, Any]]:
    """Every point of every run's curves, one row each: split ``train``, ``val`` (intermediate evals on the first
    ``eval_batches`` val batches) or ``final`` (the final eval, at the last step done)."""
    out: list[dict[str, Any]] = []
    for s in runs:
        r = s.result
        base = {"run_id": s.id, "variant": r.variant, "seed": r.seed}
        out += [{**base, "split": "train", "step": step, "loss": loss} for step, loss in r.train_curve]
        out += [{**base, "split": "val", "step": step, "loss": loss} for step, loss in r.val_curve]
        if r.final_val_loss is not None:
            out.append({**base, "split": "final", "step": r.steps_done, "loss": r.final_val_loss})
    return out


def write_curves(path: Path, runs: Sequence[StoredRun]) -> int:
    """Write ``curve_rows`` to ``path`` (.csv or .json, by its suffix); returns the number of rows."""
    rows = curve_rows(runs)
    if path.suffix.lower() == ".json":
        text = json.dumps(rows, indent=1)
    else:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CURVE_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        text = buf.getvalue()
    path.write_text(text, encoding="utf-8")
    return len(rows)


def check_output(path: Path, flag: str, suffixes: Sequence[str]) -> None:
    """Fail before any work when ``path`` cannot be written as asked: a wrong suffix or a missing folder."""
    if path.suffix.lower() not in suffixes:
        raise ArenaError(f"{flag} {path}: give a file ending in {' or '.join(suffixes)}")
    if not path.parent.is_dir():
        raise ArenaError(f"{flag} {path}: its folder {path.parent} does not exist; create it or choose another path")
