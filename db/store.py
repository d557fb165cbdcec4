"""The arena store: the only code that sees SQL, sessions or ORM objects. Callers get plain dataclasses.

One narrow class owns every statement (house style 10); its methods live in small modules by what they keep: the
runs and the connection here, ``catalog`` (variants, entries, specs), ``decisions`` (champions, tournaments),
``claims``; beside them the engine (``engine``), the records and their conversion (``records``), the migrations
(``schema``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import delete, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    DatabaseError,
    IntegrityError,
    InterfaceError,
    OperationalError,
)
from sqlalchemy.orm import Session

from arena.core.errors import ArenaError
from arena.core.result import RunResult, hparams_key
from arena.db import schema, spool
from arena.db.catalog import CatalogMixin
from arena.db.claims import Claimed, ClaimRow, ClaimsMixin
from arena.db.decisions import DecisionsMixin
from arena.db.engine import (
    SQLITE_BEGIN,
    default_url,
    display,
    first_line,
    fix_for,
    make_engine,
    missing_folders,
    sqlite_file,
)
from arena.db.models import RunModel
from arena.db.records import (
    DecisionRecord,
    DecisionRow,
    EntryRow,
    SpecRow,
    StoredRun,
    TournamentRow,
    VariantRow,
    run_model,
    stored_run,
)
from arena.db.transfer import TransferMixin

__all__ = ["ClaimRow", "Claimed", "DecisionRecord", "DecisionRow", "EntryRow", "SpecRow", "Store", "StoredRun",
           "TournamentRow", "VariantRow",
           "display",
           "schema_status", "upgrade"]
T = TypeVar("T")
DEFAULT_TIMEOUT_S = 30.0
# Held by the migrating connection on PostgreSQL so that two processes opening a blank database do not race.
_PG_MIGRATION_LOCK = 0x4172656E61  # "Arena"

class Store(CatalogMixin, DecisionsMixin, ClaimsMixin, TransferMixin):
    """The arena database behind one narrow API. This docstring is the contract.

    - ``Store(url)`` opens a SQLite file (``sqlite:///PATH``; parent folders are created) or a PostgreSQL database
      (``postgresql+psycopg://USER@HOST:PORT/DB``). A database with no arena schema is migrated to head. A database
      at an older arena schema raises ArenaError naming ``arena db upgrade`` unless ``upgrade=True``. A database
      whose schema this code does not know (a newer arena wrote it) raises ArenaError and is never modified.
      Unreachable servers, bad URLs, unreadable files and locks held past ``timeout_s`` raise ArenaError with one
      line (and the fix, where there is one). SQLite runs in WAL mode with foreign keys on and a busy timeout of
      ``timeout_s`` (default 30 s). A new SQLite file appears only complete: it is built under a temporary name and
      moved into place, so a failure (a full disk) leaves no file and no folder behind.
    - ``check_writable()`` fails now, writing nothing, where a write would fail later (a lock held past the busy
      timeout, a read-only file or transaction): commands call it before they train.
    - No finished run is lost to a failed write: ``record_run`` keeps it in the spool (``db.spool``,
      ``<arena home>/spool/``) and says so in its ArenaError; ``Store(url)`` first records the spooled runs of
      ``url`` (``recovered`` lists their keys), or leaves them there while the store still cannot take them.
    - Every method is one transaction (``_tx``): it commits entirely or not at all. A run is written in one
      transaction, so a killed process never leaves half a run. Writes on SQLite take the write lock first.
    - Methods return plain frozen dataclasses (or RunResult/Spec), never ORM objects; timestamps are aware UTC.
    - Idempotence: ``add_variant``, ``add_spec``, ``add_entry`` (same content) and ``record_run`` (same key) may be
      repeated, also concurrently from several processes, without creating duplicates.
    - Champion decisions are append-only: the store has no way to update or delete them.
    - Run claims (``db.claims``): ``claim_runs``, ``heartbeat_claims``, ``release_claims``, ``claims``; a run is
      claimed before it is trained, so two drivers on one store never train it twice.
    - Safe to share across threads; after ``fork`` open a new Store in the child.
    - Optuna may use the same database: arena only touches ``arena_*`` tables and ``arena_alembic_version``.
    """

    def __init__(self, url: str, *, upgrade: bool = False, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        path = sqlite_file(url)
        if path is not None and not path.exists():
            _create_sqlite(url, path, timeout_s)
        self._open(url, timeout_s)
        self.recovered: list[str] = []
        try:
            status = self.schema_status()
            if status["state"] == "newer":
                raise ArenaError(
                    f"database {self.display_url} was written by a newer arena (schema {status['current']}); "
                    f"upgrade arena (this one knows up to {status['head']}), or use another database"
                )
            if status["state"] == "pending" and not upgrade:
                raise ArenaError(
                    f"database {self.display_url} is at schema {status['current']}, this arena needs "
                    f"{status['head']}: run `arena db upgrade` (back it up first)"
                )
            self._enable_wal()
            if status["pending"]:
                self.upgrade()
        except BaseException:
            self._engine.dispose()
            raise
        self._drain_spool()

    def _open(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.display_url = display(url)
        self._timeout_s = timeout_s
        self._engine = make_engine(url, timeout_s)

    @classmethod
    def _unchecked(cls, url: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Store:
        """A Store that skips the schema checks of ``__init__``: for ``schema_status``/``upgrade`` only."""
        store = cls.__new__(cls)
        store._open(url, timeout_s)
        return store

    @staticmethod
    def default_url() -> str:
        """``$ARENA_DB`` if set, else ``sqlite:///<arena home>/arena.db`` with the arena home ``$ARENA_HOME``, else
        ``$XDG_DATA_HOME/arena``, else ``~/.local/share/arena``. Touches no disk."""
        return default_url()

    def close(self) -> None:
        """Release every connection. The Store is unusable afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one transaction helper ----------------------------------------------------------------------------
    @contextmanager
    def _tx(self, *, write: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, rollback on any exception. Database failures that are the
        environment's fault (unreachable, locked, unreadable, read-only) become one-line ArenaErrors."""
        token = SQLITE_BEGIN.set("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            with Session(self._engine, expire_on_commit=False) as session, session.begin():
                yield session
        except (OperationalError, InterfaceError) as e:
            raise self._db_error(e) from None
        except DatabaseError as e:
            if type(e) is DatabaseError:  # e.g. "file is not a database"; Integrity/Programming errors are bugs
                raise self._db_error(e) from None
            raise
        finally:
            SQLITE_BEGIN.reset(token)

    def _db_error(self, e: BaseException) -> ArenaError:
        reason = first_line(e)
        if "locked" in reason or "lock timeout" in reason or "could not obtain lock" in reason:
            return ArenaError(
                f"database {self.display_url} is locked by another process (waited {self._timeout_s:g} s): {reason}"
            )
        fix = fix_for(self.url, reason)
        return ArenaError(f"database {self.display_url} cannot be used: {reason}" + (f"; {fix}" if fix else ""))

    def check_writable(self) -> None:
        """Raise ArenaError (one line) now if a write would fail: the write lock not granted within the busy timeout,
        a read-only file, folder or transaction, no right to change ``arena_runs``. Writes nothing: a DELETE that
        matches no row still takes the write lock (SQLite) or the table's row-exclusive lock (PostgreSQL)."""
        try:
            with self._tx(write=True) as s:
                s.execute(text("DELETE FROM arena_runs WHERE 1 = 0"))
        except DatabaseError as e:  # PostgreSQL: a read-only transaction, no permission: the setup's, not a bug
            raise self._db_error(e) from None

    def _enable_wal(self) -> None:
        if self._engine.dialect.name != "sqlite":
            return
        deadline = time.monotonic() + self._timeout_s
        while True:
            try:
                raw = self._engine.raw_connection()  # outside any transaction: journal_mode cannot change inside one
                try:
                    cursor = raw.cursor()
                    cursor.execute("PRAGMA journal_mode = WAL")
                    cursor.close()
                finally:
                    raw.close()
                return
            except sqlite3.OperationalError as e:
                # SQLite does not call its busy handler for a journal-mode change: wait for the other writer here.
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise self._db_error(e) from None
                time.sleep(0.05)
            except (OperationalError, DatabaseError) as e:
                raise self._db_error(e) from None

    # -- schema ------------------------------------------------------------------------------------------------
    def schema_status(self) -> dict[str, Any]:
        """``{"current": rev|None, "head": rev, "pending": [revs, oldest first], "state": s}`` where ``state`` is
        blank | current | pending | newer. Read-only."""
        with self._tx() as s:
            return schema.read_status(s.connection()).as_dict()

    def upgrade(self) -> list[str]:
        """Apply pending migrations (under an exclusive lock); return the revisions applied, oldest first.
        Refuses (ArenaError) a schema written by a newer arena."""
        with self._tx(write=True) as s:
            conn = s.connection()
            if self._engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            status = schema.read_status(conn)
            if status.state == "newer":
                raise ArenaError(
                    f"database {self.display_url} was written by a newer arena (schema {status.current}); upgrade arena"
                )
            try:
                return schema.migrate(conn)
            except OperationalError:
                raise  # locked, unreachable, read-only: _tx makes it one line
            except Exception as e:  # one line for the user, the chain for debugging
                raise ArenaError(f"migrating database {self.display_url} failed: {first_line(e)}") from e

    def _write(self, what: str, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one write transaction. Idempotent writers check-then-insert; on PostgreSQL two processes
        can both pass the check, and the loser's insert raises IntegrityError: it is retried, and then finds the
        winner's row. (On SQLite ``BEGIN IMMEDIATE`` serializes writers, so the race cannot happen.)"""
        for _ in range(3):
            try:
                with self._tx(write=True) as s:
                    return work(s)
            except IntegrityError:
                continue
        raise ArenaError(f"database {self.display_url}: could not write {what} (conflicting concurrent writers)")

    # -- runs --------------------------------------------------------------------------------------------------
    def record_run(
        self,
        result: RunResult,
        *,
        study_name: str | None = None,
        trial_number: int | None = None,
        replace: bool = False,
    ) -> int:
        """Store a finished run in one transaction and return its id. Idempotent on ``result.key``: if that key is
        stored already, nothing is written and the stored id is returned, also when two processes race. With
        ``replace=True`` (``--rerun``) an existing run with that key is replaced atomically
        (delete + insert in one transaction; the returned id is the new row's). When the write fails, the run is
        kept in the spool and the ArenaError says where (the next ``Store`` on this URL records it)."""
        try:
            return self._record_run(result, study_name, trial_number, replace)
        except ArenaError as exc:
            try:
                path = spool.keep(self.url, result.to_dict(), result.key, study_name=study_name,
                                  trial_number=trial_number, replace=replace)
            except OSError as e:
                raise ArenaError(f"{exc}; the finished run {result.variant} seed {result.seed} could not be kept "
                                 f"in {spool.spool_dir()} either ({e.strerror}): it is lost") from None
            raise ArenaError(f"{exc}; the finished run {result.variant} seed {result.seed} is kept in {path}: the "
                             "next arena command that opens this store records it") from None

    def _record_run(self, result: RunResult, study_name: str | None, trial_number: int | None, replace: bool) -> int:
        key = result.key

        def work(s: Session) -> int:
            existing = s.scalar(select(RunModel.id).where(RunModel.key == key))
            if existing is not None and not replace:
                return existing
            if existing is not None:
                s.execute(delete(RunModel).where(RunModel.key == key))
            row = run_model(result, key, study_name, trial_number)
            s.add(row)
            s.flush()
            return row.id

        return self._write(f"run {key}", work)

    def _drain_spool(self) -> None:
        """Record the spooled runs of this store (oldest failure first); stop at the first that still fails."""
        for path in spool.pending(self.url):
            claimed = spool.claim(path)
            if claimed is None:  # another process is recording it
                continue
            try:
                data = spool.load(claimed)
                self._record_run(RunResult.from_dict(data["result"]), data.get("study_name"),
                                 data.get("trial_number"), bool(data.get("replace")))
            except (ArenaError, OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):  # opening the store never fails because of the spool
                    spool.release(claimed)  # the store still cannot take it (or a person should look): kept
                return
            claimed.unlink(missing_ok=True)
            self.recovered.append(path.stem)

    def get_run(self, key: str) -> StoredRun | None:
        """The run stored under ``key`` (``runner.result.run_key``), or None."""
        with self._tx() as s:
            row = s.scalars(select(RunModel).where(RunModel.key == key)).first()
            return stored_run(row) if row is not None else None

    def run(self, run_id: int) -> StoredRun | None:
        with self._tx() as s:
            row = s.get(RunModel, run_id)
            return stored_run(row) if row is not None else None

    def runs(
        self,
        spec_hash: str,
        *,
        variant_sha: str | None = None,
        hparams: dict[str, float] | None = None,
        status: str | None = None,
        code_digest: str | None = None,
        stack_id: str | None = None,
    ) -> list[StoredRun]:
        """The runs under one spec, oldest first, optionally narrowed to a variant version, a hyperparameter set
        (compared by ``hparams_key``, so 0.1 == 0.1000000000001), a status, and the code and stack that computed
        them."""
        query = select(RunModel).where(RunModel.spec_hash == spec_hash)
        if code_digest is not None:
            query = query.where(RunModel.code_digest == code_digest)
        if stack_id is not None:
            query = query.where(RunModel.stack_id == stack_id)
        if variant_sha is not None:
            query = query.where(RunModel.variant_sha == variant_sha)
        if hparams is not None:
            query = query.where(RunModel.hparams_key == hparams_key(hparams))
        if status is not None:
            query = query.where(RunModel.status == status)
        with self._tx() as s:
            return [stored_run(r) for r in s.scalars(query.order_by(RunModel.id))]


def _create_sqlite(url: str, path: Path, timeout_s: float) -> list[str]:
    """Build a new SQLite store (migrated to head) under a temporary name beside ``path`` and link it into place,
    so that the store appears whole or not at all: a failure removes the temporary file and any folder made for it.
    Built in rollback-journal mode (one file to move; ``Store`` turns WAL on once it is in place). If another
    process created ``path`` meanwhile, its store is kept and this one dropped. Returns the revisions applied."""
    made = missing_folders(path)
    tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with Store._unchecked(make_url(url).set(database=str(tmp)).render_as_string(hide_password=False),
                              timeout_s) as store:
            applied = store.upgrade()
        try:
            os.link(tmp, path)  # fails, rather than replaces, when the store appeared meanwhile
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links: a rename, unless the store appeared meanwhile
            if not path.exists():
                os.replace(tmp, path)
        return applied
    except ArenaError as exc:  # one line naming the store, not its temporary name
        raise ArenaError(str(exc).replace(str(tmp), str(path))) from None
    finally:
        for leftover in (tmp, Path(f"{tmp}-journal")):
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                leftover.unlink()
        for folder in made if not path.exists() else []:
            with contextlib.suppress(OSError):  # only empty folders go
                folder.rmdir()


# -- module functions for `arena db status|upgrade` ---------------------------------------------------------------
def schema_status(url: str) -> dict[str, Any]:
    """Where the database at ``url`` stands (see ``Store.schema_status``), without migrating or refusing it."""
    with Store._unchecked(url) as store:
        return store.schema_status()


def upgrade(url: str) -> list[str]:
    """Migrate the database at ``url`` to head; return the revisions applied, oldest first ([] when current).
    A schema written by a newer arena raises ArenaError and is left untouched. A new SQLite file appears whole
    (``_create_sqlite``)."""
    path = sqlite_file(url)
    if path is not None and not path.exists():
        applied = _create_sqlite(url, path, DEFAULT_TIMEOUT_S)
        Store(url).close()  # turns WAL on, as every store has it
        return applied
    with Store._unchecked(url) as store:
        if store.schema_status()["state"] == "newer":
            return store.upgrade()  # raises the ArenaError before touching anything
        store._enable_wal()
        return store.upgrade()
