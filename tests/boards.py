"""Test helper: a store with a finished tournament, built by hand (the leaderboard and view tests share it)."""

from __future__ import annotations

from typing import Any

from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.db.store import DecisionRecord, Store
from arena.orchestration.entries import Entry


def crown_by_default(store: Store, spec: Spec, entry: Entry, basis: Basis, names: list[str],
                     outcome: list[dict[str, Any]] | None = None) -> int:
    """A completed tournament of ``names`` on ``basis`` whose decision crowned ``entry`` by default; its id."""
    tid = store.start_tournament(spec.hash, "default", basis.code, basis.stack, basis.info, "f" * 32, sorted(names))
    store.record_decision(DecisionRecord(
        spec_hash=spec.hash, challenger_name=entry.name, challenger_sha=entry.loaded.sha256,
        challenger_hparams=entry.hparams.to_dict(), champion_name=None, champion_sha=None, champion_hparams=None,
        promoted=False, by_default=True, reason="by default", evidence={}, code_digest=basis.code,
        stack_id=basis.stack, tournament_id=tid,
    ))
    store.finish_tournament(tid, outcome or [], "g" * 32)
    return tid
