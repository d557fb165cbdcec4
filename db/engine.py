"""Engine construction for the store: URL checks, SQLite pragmas and transaction start, PostgreSQL timeouts.

Only ``store.py`` uses this module. Nothing happens at import.
"""

from __future__ import annotations

import contextvars
import re
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from arena.core.errors import ArenaError
from arena.core.home import default_db_url

# The statement a SQLite transaction starts with: "BEGIN IMMEDIATE" for writes, so that the write lock is taken
# (waiting up to the busy timeout) before anything is read, instead of failing on a lock upgrade mid-transaction.
SQLITE_BEGIN: contextvars.ContextVar[str] = contextvars.ContextVar("SQLITE_BEGIN", default="BEGIN")


# -- engine -----------------------------------------------------------------------------------------------------
def default_url() -> str:
    """The store's URL (``arena.core.home.default_db_url``: the one rule for it). Touches no disk."""
    return default_db_url()


def display(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def first_line(e: BaseException) -> str:
    orig = getattr(e, "orig", None) or e
    lines = [ln.strip() for ln in str(orig).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(orig).__name__


def fix_for(url: str, reason: str) -> str | None:
    """The fix to print after a database error's first line, for the failures a user can do something about."""
    path = sqlite_file(url)
    # The nearest folder that exists: a store that failed to be created left none of its own behind.
    folder = next((f for f in (path.parent, *path.parent.parents) if f.exists()), None) if path else None
    if path is not None and "file is not a database" in reason:
        return f"{path} is not an SQLite database: point --db (or ARENA_DB) at an arena store, or move the file away"
    if folder is not None and ("disk is full" in reason or "No space left" in reason):
        return f"free some space on {folder} (df -h {folder}), or point --db (or ARENA_DB) elsewhere"
    if folder is not None and "disk I/O error" in reason:
        return f"check the disk that holds {folder} (is it full? df -h {folder}), or point --db elsewhere"
    if path is not None and "readonly database" in reason:
        return f"make {path} and its folder writable, or point --db (or ARENA_DB) elsewhere"
    if "read-only transaction" in reason:
        return "this database only reads (a standby, or default_transaction_read_only): point --db at a writable one"
    if "permission denied" in reason:
        return "the role may not write arena's tables: grant it INSERT, UPDATE, DELETE on arena_*, or use another role"
    missing = re.search(r'database "([^"]+)" does not exist', reason)
    if missing is not None:
        u = make_url(url)
        where = " ".join(f"{flag} {value}" for flag, value in (("-h", u.host), ("-p", u.port), ("-U", u.username))
                         if value)
        return f"create it: createdb {where} {missing.group(1)} (or point --db at an existing database)"
    return None


def missing_folders(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, nearest first (what creating ``path`` would make)."""
    out = []
    for folder in path.absolute().parents:
        if folder.exists():
            break
        out.append(folder)
    return out


def sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///`` URL names; None for in-memory SQLite, PostgreSQL or a malformed URL."""
    try:
        u = make_url(url)
    except ArgumentError:
        return None
    if u.get_backend_name() != "sqlite":
        return None
    database = u.database or ""
    if database in ("", ":memory:") or database.startswith("file:") or u.query.get("mode") == "memory":
        return None
    return Path(database).expanduser()


def make_engine(url: str, timeout_s: float) -> Engine:
    """An engine for a sqlite or postgresql URL, configured for arena; ArenaError on a bad URL or driver."""
    try:
        u = make_url(url)
    except ArgumentError:
        raise ArenaError(
            f"'{url}' is not a database URL; use sqlite:///PATH or postgresql+psycopg://USER@HOST:PORT/DB"
        ) from None
    backend = u.get_backend_name()
    try:
        if backend == "sqlite":
            path = sqlite_file(url)
            memory = path is None
            if path is not None:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    reason = f"{e.strerror}: {e.filename}"
                    raise ArenaError(f"database {display(url)} cannot be created: {reason}") from None
            kwargs: dict[str, Any] = {"connect_args": {"timeout": timeout_s}}
            if memory:  # one shared connection, or every checkout would see a different empty database
                kwargs = {"connect_args": {"check_same_thread": False}, "poolclass": StaticPool}
            engine = create_engine(u, **kwargs)
            _configure_sqlite(engine, timeout_s)
            return engine
        if backend == "postgresql":
            # lock_timeout: a lock held past timeout_s fails with one line instead of hanging (as SQLite's busy timeout)
            connect_args = {
                "connect_timeout": max(1, min(10, round(timeout_s))),
                "options": f"-c lock_timeout={int(timeout_s * 1000)}",
            }
            return create_engine(u, pool_pre_ping=True, connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as e:
        raise ArenaError(f"database {display(url)}: no driver for it ({first_line(e)})") from None
    raise ArenaError(f"database {display(url)}: arena supports sqlite:/// and postgresql+psycopg:// URLs only")


def _configure_sqlite(engine: Engine, timeout_s: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, record: Any) -> None:
        # pysqlite's own BEGIN handling skips DDL and cannot do BEGIN IMMEDIATE: turn it off, emit our own below.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql(SQLITE_BEGIN.get())
