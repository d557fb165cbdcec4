"""Champion decisions (append-only) and tournaments, as the store keeps them. ``Store`` offers these methods
(``DecisionsMixin``); callers never see SQL. The store's contract is ``Store``'s docstring.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from arena.core.errors import ArenaError
from arena.db.models import DecisionModel, TournamentModel
from arena.db.records import DecisionRecord, DecisionRow, TournamentRow, decision_row, dumps, now, tournament_row


class DecisionsMixin:
    """The champion-decision and tournament methods of ``Store``; they use the Store's one transaction helper."""

    if TYPE_CHECKING:
        _tx: Callable[..., AbstractContextManager[Session]]
        _write: Callable[[str, Callable[[Session], Any]], Any]

    # -- champions ---------------------------------------------------------------------------------------------
    def record_decision(self, d: DecisionRecord) -> int:
        """Append a champion decision (stamped with the current UTC time); return its id. Never updates."""
        with self._tx(write=True) as s:
            row = DecisionModel(
                spec_hash=d.spec_hash,
                decided_at=now(),
                challenger_name=d.challenger_name,
                challenger_sha=d.challenger_sha,
                challenger_hparams_json=dumps(d.challenger_hparams),
                champion_name=d.champion_name,
                champion_sha=d.champion_sha,
                champion_hparams_json=None if d.champion_hparams is None else dumps(d.champion_hparams),
                promoted=d.promoted,
                by_default=d.by_default,
                reason=d.reason,
                evidence_json=dumps(d.evidence),
                league=None if d.league == "default" else d.league,
                code_digest=d.code_digest,
                stack_id=d.stack_id,
                tournament_id=d.tournament_id,
            )
            s.add(row)
            s.flush()
            return row.id

    def decisions(self, spec_hash: str | None = None, league: str | None = None) -> list[DecisionRow]:
        """Every decision (of one spec and league, if given), in the order they were recorded."""
        query = select(DecisionModel).order_by(DecisionModel.id)
        if spec_hash is not None:
            query = query.where(DecisionModel.spec_hash == spec_hash)
        if league is not None:
            query = query.where(_league_is(league))
        with self._tx() as s:
            return [decision_row(r) for r in s.scalars(query)]

    def champion(self, spec_hash: str, league: str = "default") -> DecisionRow | None:
        """The latest decision of ``spec_hash`` in ``league`` that crowned someone (promoted or by default)."""
        query = (
            select(DecisionModel)
            .where(DecisionModel.spec_hash == spec_hash)
            .where(_league_is(league))
            .where(or_(DecisionModel.promoted.is_(True), DecisionModel.by_default.is_(True)))
            .order_by(DecisionModel.id.desc())
            .limit(1)
        )
        with self._tx() as s:
            row = s.scalars(query).first()
            return decision_row(row) if row is not None else None


    # -- tournaments -------------------------------------------------------------------------------------------------
    def start_tournament(
        self, spec_hash: str, league: str, code_digest: str, stack_id: str, stack: dict[str, Any], fingerprint: str,
        entries: list[str],
    ) -> int:
        """Record that a tournament started (status ``running``); return its id."""
        with self._tx(write=True) as s:
            row = TournamentModel(
                spec_hash=spec_hash, league=league, code_digest=code_digest, stack_id=stack_id,
                stack_json=dumps(stack), fingerprint=fingerprint, entries_json=dumps(entries), status="running",
                started=now(),
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_tournament(self, tournament_id: int, outcome: list[dict[str, Any]], fingerprint: str) -> None:
        """Mark a tournament completed with its outcome (one dict per decision or note) and the fingerprint of the
        state it left (a later tournament with that fingerprint has nothing new to decide)."""
        with self._tx(write=True) as s:
            row = s.get(TournamentModel, tournament_id)
            if row is None:
                raise ArenaError(f"unknown tournament #{tournament_id}")
            row.status, row.outcome_json, row.finished = "completed", dumps(outcome), now()
            row.fingerprint = fingerprint

    def tournaments(self, spec_hash: str | None = None, *, completed: bool = False) -> list[TournamentRow]:
        """Tournaments (of one spec), oldest first; only completed ones with ``completed``."""
        query = select(TournamentModel).order_by(TournamentModel.id)
        if spec_hash is not None:
            query = query.where(TournamentModel.spec_hash == spec_hash)
        if completed:
            query = query.where(TournamentModel.status == "completed")
        with self._tx() as s:
            return [tournament_row(r) for r in s.scalars(query)]

    def completed_tournament(self, fingerprint: str) -> TournamentRow | None:
        """The latest completed tournament with this fingerprint (same spec, league, basis, entries, champion)."""
        query = (select(TournamentModel).where(TournamentModel.fingerprint == fingerprint)
                 .where(TournamentModel.status == "completed").order_by(TournamentModel.id.desc()).limit(1))
        with self._tx() as s:
            row = s.scalars(query).first()
            return tournament_row(row) if row is not None else None


def _league_is(league: str) -> Any:
    return DecisionModel.league.is_(None) if league == "default" else DecisionModel.league == league
