"""Run claims: a driver claims a run in the store before it trains it, so that two drivers on one store (one host or
many) never train the same run twice. ``Store`` offers these methods (``ClaimsMixin``); callers never see SQL.

The rules (what callers may rely on):

* An owner is ``host:pid:start-time`` (``owner_id()``): the start time tells a live process from a reused pid.
* ``claim_runs(keys)`` takes every key that is free, already ours, or held by a dead owner, in one transaction, and
  says who holds the others. A claim is dead when its ``expires`` (last heartbeat + the owner's TTL) has passed, or
  when its owner ran on this host and that process is gone. Taking over is compare-and-swap on (owner, heartbeat),
  so of two drivers taking over one dead claim only one wins; two inserting one key race on the primary key and
  the loser finds the winner's row (``Store._write`` retries).
* ``heartbeat_claims()`` pushes every claim of this owner ``ttl_s`` into the future; ``release_claims`` drops them.
  A driver records a run first, then releases its claim: whoever takes a released claim finds the run stored.
* ``reap_claims()`` drops every dead claim: a driver killed between recording a run and releasing its claim leaves
  a claim on a run nobody will ask for again (it is memoized), so each schedule sweeps them when it opens.
* Claims only coordinate who trains: the run key stays unique in ``arena_runs`` whatever happens to the claims.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from arena.core.errors import ArenaError
from arena.core.liveness import process_start, still_running
from arena.db.models import ClaimModel
from arena.db.records import now

T = TypeVar("T")
DEFAULT_TTL_S = 120.0  # a claim whose owner has not been heard of for this long is dead (other hosts)


def claim_ttl_s() -> float:
    """``ARENA_CLAIM_TTL_S`` (seconds), default 120: how long a claim lives without a heartbeat."""
    raw = os.environ.get("ARENA_CLAIM_TTL_S")
    if raw is None:
        return DEFAULT_TTL_S
    try:
        value = float(raw)
    except ValueError:
        raise ArenaError(f"ARENA_CLAIM_TTL_S={raw!r}: give a number of seconds") from None
    if not value > 0:
        raise ArenaError(f"ARENA_CLAIM_TTL_S={raw!r}: give a positive number of seconds")
    return value


@functools.cache
def _this_process() -> tuple[str, int, str]:
    return socket.gethostname(), os.getpid(), process_start(os.getpid()) or "?"


def owner_id() -> str:
    """This process as a claim owner: ``host:pid:start-time``."""
    host, pid, start = _this_process()
    if pid != os.getpid():  # a forked child is another owner
        _this_process.cache_clear()
        host, pid, start = _this_process()
    return f"{host}:{pid}:{start}"


def owner_alive(owner: str) -> bool | None:
    """Whether the owner process still runs: True/False on this host, None on another host (ask its heartbeat)."""
    try:
        host, pid_text, start = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    return still_running(pid, None if start == "?" else start)


@dataclass(frozen=True)
class ClaimRow:
    key: str
    owner: str
    claimed: datetime
    heartbeat: datetime
    expires: datetime


@dataclass(frozen=True)
class Claimed:
    """What ``claim_runs`` got: ``mine`` (keys now claimed by the caller, in the order asked) and ``held`` (key →
    the live owner that holds it)."""

    mine: list[str] = field(default_factory=list)
    held: dict[str, str] = field(default_factory=dict)


def _dead(row: ClaimModel, at: datetime) -> bool:
    return row.expires <= at or owner_alive(row.owner) is False


class ClaimsMixin:
    """The claim methods of ``Store`` (see the module docstring); they use the Store's one transaction helper."""

    if TYPE_CHECKING:
        _tx: Callable[..., AbstractContextManager[Session]]
        _write: Callable[[str, Callable[[Session], Any]], Any]

    def claim_runs(self, keys: Iterable[str], owner: str | None = None, ttl_s: float | None = None) -> Claimed:
        """Claim the runs ``keys`` for ``owner`` (default: this process) for ``ttl_s`` (default ``claim_ttl_s()``),
        taking over dead claims; one transaction."""
        me, ttl, wanted = owner or owner_id(), ttl_s or claim_ttl_s(), list(dict.fromkeys(keys))

        def work(s: Session) -> Claimed:
            at = now()
            expires = at + timedelta(seconds=ttl)
            rows = {r.key: r for r in s.scalars(select(ClaimModel).where(ClaimModel.key.in_(wanted)))} if wanted else {}
            got = Claimed()
            for key in wanted:
                row = rows.get(key)
                if row is None:
                    s.add(ClaimModel(key=key, owner=me, claimed=at, heartbeat=at, expires=expires))
                    s.flush()  # a concurrent insert of the same key fails here: _write retries and sees it
                elif row.owner != me and not _dead(row, at):
                    got.held[key] = row.owner
                    continue
                else:  # ours already, or its owner is dead: compare-and-swap, so one taker wins
                    taken = s.execute(
                        update(ClaimModel)
                        .where(ClaimModel.key == key, ClaimModel.owner == row.owner,
                               ClaimModel.heartbeat == row.heartbeat)
                        .values(owner=me, claimed=at if row.owner != me else row.claimed, heartbeat=at,
                                expires=expires)
                        .execution_options(synchronize_session=False)
                    )
                    if getattr(taken, "rowcount", 1) != 1:
                        got.held[key] = "?"
                        continue
                got.mine.append(key)
            return got

        result: Claimed = self._write("run claims", work)
        return result

    def heartbeat_claims(self, owner: str | None = None, ttl_s: float | None = None) -> int:
        """Refresh every claim of ``owner`` (default: this process); returns how many it holds."""
        me, ttl = owner or owner_id(), ttl_s or claim_ttl_s()

        def work(s: Session) -> int:
            at = now()
            done = s.execute(update(ClaimModel).where(ClaimModel.owner == me)
                             .values(heartbeat=at, expires=at + timedelta(seconds=ttl))
                             .execution_options(synchronize_session=False))
            return int(getattr(done, "rowcount", 0))

        count: int = self._write("run claims", work)
        return count

    def release_claims(self, keys: Iterable[str] | None = None, owner: str | None = None) -> int:
        """Drop ``owner``'s claims on ``keys`` (None: all of them); others' claims are never touched."""
        me = owner or owner_id()
        query = delete(ClaimModel).where(ClaimModel.owner == me)
        if keys is not None:
            wanted = list(keys)
            if not wanted:
                return 0
            query = query.where(ClaimModel.key.in_(wanted))

        def work(s: Session) -> int:
            return int(getattr(s.execute(query.execution_options(synchronize_session=False)), "rowcount", 0))

        count: int = self._write("run claims", work)
        return count

    def reap_claims(self) -> int:
        """Drop every dead claim (expired, or its owner gone on this host); returns how many. Live owners' claims
        are never touched; a claim whose owner took it again since it was read is left (compare-and-swap)."""

        def work(s: Session) -> int:
            at, gone = now(), 0
            for row in s.scalars(select(ClaimModel)).all():
                if not _dead(row, at):
                    continue
                done = s.execute(delete(ClaimModel)
                                 .where(ClaimModel.key == row.key, ClaimModel.owner == row.owner,
                                        ClaimModel.heartbeat == row.heartbeat)
                                 .execution_options(synchronize_session=False))
                gone += int(getattr(done, "rowcount", 0))
            return gone

        count: int = self._write("run claims", work)
        return count

    def claims(self, keys: Iterable[str] | None = None) -> list[ClaimRow]:
        """The claims in the store (on ``keys``, if given), by key."""
        query = select(ClaimModel).order_by(ClaimModel.key)
        if keys is not None:
            query = query.where(ClaimModel.key.in_(list(keys)))
        with self._tx() as s:
            return [ClaimRow(r.key, r.owner, r.claimed, r.heartbeat, r.expires) for r in s.scalars(query)]
