"""What the store's callers get (plain frozen dataclasses) and the conversion between them and the ORM rows.
Only ``store.py`` uses the conversions; callers import the record types from ``arena.db.store``."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from arena.core.result import RunResult, hparams_key
from arena.db.models import DecisionModel, EntryModel, RunModel, TournamentModel, VariantModel

# RunResult fields that have columns of their own; the rest goes to metrics_json.
_RUN_COLUMNS = ("variant", "variant_sha", "spec_hash", "seed", "hparams", "status", "error", "wall_s", "final_val_loss",
                "code_digest", "stack_id")


@dataclass(frozen=True)
class VariantRow:
    sha256: str
    name: str
    kind: str
    summary: str
    source: str
    path: str
    first_seen: datetime
    defaults: dict[str, float] | None = None  # the declared hyperparameters' defaults (None: stored before 0005)


@dataclass(frozen=True)
class EntryRow:
    name: str
    variant_sha: str
    hparams: dict[str, float]
    origin: str
    study_name: str | None
    created: datetime
    league: str = "default"  # tuned entries: "tuned-<trials>", the league of entries with that tuning budget
    budget: int | None = None


@dataclass(frozen=True)
class SpecRow:
    hash: str
    name: str
    created: datetime
    n_runs: int
    label: str | None = None


@dataclass(frozen=True)
class TournamentRow:
    id: int
    spec_hash: str
    league: str
    code_digest: str
    stack_id: str
    stack: dict[str, Any]
    fingerprint: str
    entries: list[str]
    status: str
    outcome: list[dict[str, Any]] | None
    started: datetime
    finished: datetime | None


@dataclass(frozen=True)
class StoredRun:
    id: int
    key: str
    created: datetime
    study_name: str | None
    trial_number: int | None
    result: RunResult


@dataclass(frozen=True, kw_only=True)
class DecisionRecord:
    """A champion contest's outcome, as the registry hands it to ``record_decision``."""

    spec_hash: str
    challenger_name: str
    challenger_sha: str
    challenger_hparams: dict[str, float]
    champion_name: str | None
    champion_sha: str | None
    champion_hparams: dict[str, float] | None
    promoted: bool
    by_default: bool
    reason: str
    evidence: dict[str, Any]
    league: str = "default"
    code_digest: str | None = None
    stack_id: str | None = None
    tournament_id: int | None = None


@dataclass(frozen=True, kw_only=True)
class DecisionRow(DecisionRecord):
    """A stored decision: the record plus its id and the UTC time it was recorded."""

    id: int
    decided_at: datetime


def loads(text_: str | None) -> Any:
    return None if text_ is None else json.loads(text_)


def dumps(value: Any) -> str:
    # default=str: a run must never fail to be stored because env holds a Path; NaN/inf are kept (Text column).
    return json.dumps(value, sort_keys=True, default=str)


def now() -> datetime:
    return datetime.now(UTC)


def variant_row(r: VariantModel) -> VariantRow:
    return VariantRow(
        sha256=r.sha256,
        name=r.name,
        kind=r.kind,
        summary=r.summary,
        source=r.source,
        path=r.path,
        first_seen=r.first_seen,
        defaults=json.loads(r.defaults_json) if r.defaults_json else None,
    )


def entry_row(r: EntryModel) -> EntryRow:
    return EntryRow(
        name=r.name,
        variant_sha=r.variant_sha,
        hparams=json.loads(r.hparams_json),
        origin=r.origin,
        study_name=r.study_name,
        created=r.created,
        league=r.league or ("default" if r.origin == "file" else "tuned"),
        budget=r.budget,
    )


def tournament_row(r: TournamentModel) -> TournamentRow:
    return TournamentRow(
        id=r.id, spec_hash=r.spec_hash, league=r.league, code_digest=r.code_digest, stack_id=r.stack_id,
        stack=json.loads(r.stack_json), fingerprint=r.fingerprint, entries=json.loads(r.entries_json),
        status=r.status, outcome=loads(r.outcome_json), started=r.started, finished=r.finished,
    )


def run_model(result: RunResult, key: str, study_name: str | None, trial_number: int | None) -> RunModel:
    rest = result.to_dict()
    for name in _RUN_COLUMNS:
        rest.pop(name)
    loss = result.final_val_loss
    if loss is not None and math.isnan(loss):  # SQLite stores NaN as NULL: keep the NaN in the JSON instead
        rest["final_val_loss"], loss = loss, None
    return RunModel(
        key=key,
        variant_sha=result.variant_sha,
        variant_name=result.variant,
        spec_hash=result.spec_hash,
        seed=result.seed,
        hparams_json=dumps(result.hparams),
        hparams_key=hparams_key(result.hparams),
        status=result.status,
        final_val_loss=loss,
        metrics_json=dumps(rest),
        error=result.error,
        study_name=study_name,
        trial_number=trial_number,
        created=now(),
        wall_s=result.wall_s,
        code_digest=result.code_digest or None,
        stack_id=result.stack_id or None,
    )


def stored_run(r: RunModel) -> StoredRun:
    data = {
        "variant": r.variant_name,
        "variant_sha": r.variant_sha,
        "spec_hash": r.spec_hash,
        "seed": r.seed,
        "hparams": json.loads(r.hparams_json),
        "status": r.status,
        "error": r.error,
        "wall_s": r.wall_s,
        "final_val_loss": r.final_val_loss,
        "code_digest": r.code_digest or "",
        "stack_id": r.stack_id or "",
    }
    data.update(json.loads(r.metrics_json))
    return StoredRun(
        id=r.id,
        key=r.key,
        created=r.created,
        study_name=r.study_name,
        trial_number=r.trial_number,
        result=RunResult.from_dict(data),
    )


def decision_row(r: DecisionModel) -> DecisionRow:
    return DecisionRow(
        id=r.id,
        decided_at=r.decided_at,
        spec_hash=r.spec_hash,
        challenger_name=r.challenger_name,
        challenger_sha=r.challenger_sha,
        challenger_hparams=json.loads(r.challenger_hparams_json),
        champion_name=r.champion_name,
        champion_sha=r.champion_sha,
        champion_hparams=loads(r.champion_hparams_json),
        promoted=r.promoted,
        by_default=r.by_default,
        reason=r.reason,
        evidence=json.loads(r.evidence_json),
        league=r.league or "default",
        code_digest=r.code_digest,
        stack_id=r.stack_id,
        tournament_id=r.tournament_id,
    )
