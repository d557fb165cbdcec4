"""SQLAlchemy 2 typed models of the arena store. Every table is prefixed ``arena_``.

The prefix is load-bearing: Optuna may share the database (its tables are ``studies``, ``trials``, ...,
``alembic_version``; see docs optuna.md §1), and the migrations only ever look at ``arena_*`` tables.
The schema is defined by the migrations in ``migrations/versions``; a test checks these models match them.

JSON payloads are stored as ``Text`` (``json.dumps``), not a JSON column type: runs may carry NaN/inf (a diverged
curve), which PostgreSQL's ``jsonb`` rejects, and Text behaves the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Deterministic constraint names, identical on every backend (so migrations can name them).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

SHA = String(64)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python, whatever the backend stores.

    SQLite keeps no offset, so values are converted to UTC before they are written and tagged UTC when read.
    Naive datetimes are refused on write: they are ambiguous.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: arena stores timezone-aware UTC timestamps only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class VariantModel(Base):
    """One version of a variant file, identified by the sha256 of its source."""

    __tablename__ = "arena_variants"

    sha256: Mapped[str] = mapped_column(SHA, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(100))
    summary: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    path: Mapped[str] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    defaults_json: Mapped[str | None] = mapped_column(Text, nullable=True)  # {hparam: declared default}


class EntryModel(Base):
    """A named, frozen (variant version, hyperparameters) pair, e.g. ``gf_mh@tuned`` (revision 0002)."""

    __tablename__ = "arena_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    variant_sha: Mapped[str] = mapped_column(SHA, ForeignKey("arena_variants.sha256"))
    hparams_json: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(50))
    study_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    league: Mapped[str | None] = mapped_column(String(100), nullable=True)  # revision 0003
    budget: Mapped[int | None] = mapped_column(Integer, nullable=True)  # revision 0003


class SpecModel(Base):
    """A benchmark spec, by hash; ``json`` is ``Spec.to_dict()`` (name included)."""

    __tablename__ = "arena_specs"

    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    json: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)  # revision 0003


class RunModel(Base):
    """One finished trial. ``key`` is ``runner.result.run_key``; ``metrics_json`` holds the RunResult fields
    that have no column of their own (curves, diagnostics, env, timings, params, backend, ...)."""

    __tablename__ = "arena_runs"
    __table_args__ = (Index("ix_arena_runs_spec_variant", "spec_hash", "variant_sha"),
                      Index("ix_arena_runs_spec_basis", "spec_hash", "code_digest", "stack_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    variant_sha: Mapped[str] = mapped_column(SHA)
    variant_name: Mapped[str] = mapped_column(String(200))
    spec_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    hparams_json: Mapped[str] = mapped_column(Text)  # the exact hyperparameters
    hparams_key: Mapped[str] = mapped_column(Text)  # runner.result.hparams_key: canonical, for equality filters
    status: Mapped[str] = mapped_column(String(20))
    final_val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics_json: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    study_name: Mapped[str | None] = mapped_column(String(200), nullable=True)  # revision 0002
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)  # revision 0002
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    wall_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    code_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # revision 0003
    stack_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # revision 0003


class DecisionModel(Base):
    """One champion contest's outcome. Append-only: the store never updates or deletes these rows."""

    __tablename__ = "arena_champion_decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    spec_hash: Mapped[str] = mapped_column(String(64), index=True)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime)
    challenger_name: Mapped[str] = mapped_column(String(200))
    challenger_sha: Mapped[str] = mapped_column(SHA)
    challenger_hparams_json: Mapped[str] = mapped_column(Text)
    champion_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    champion_sha: Mapped[str | None] = mapped_column(SHA, nullable=True)
    champion_hparams_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    promoted: Mapped[bool] = mapped_column(Boolean)
    by_default: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    evidence_json: Mapped[str] = mapped_column(Text)
    league: Mapped[str | None] = mapped_column(String(100), nullable=True)  # revision 0003 (NULL: default)
    code_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    stack_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tournament_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class TournamentModel(Base):
    """One tournament command (revision 0003): its spec, league, basis, entries and, once completed, its outcome."""

    __tablename__ = "arena_tournaments"
    __table_args__ = (Index("ix_arena_tournaments_fingerprint", "fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    spec_hash: Mapped[str] = mapped_column(String(64))
    league: Mapped[str] = mapped_column(String(100))
    code_digest: Mapped[str] = mapped_column(String(64))
    stack_id: Mapped[str] = mapped_column(String(64))
    stack_json: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    entries_json: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # running | completed
    outcome_json: Mapped[str | None] = mapped_column(Text, nullable=True)
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    finished: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ClaimModel(Base):
    """A run being trained by one driver (revision 0004): ``db.claims`` takes, refreshes, expires and drops these."""

    __tablename__ = "arena_claims"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # the run key
    owner: Mapped[str] = mapped_column(String(300), index=True)  # host:pid:start-time of the driver
    claimed: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat: Mapped[datetime] = mapped_column(UTCDateTime)
    expires: Mapped[datetime] = mapped_column(UTCDateTime)
