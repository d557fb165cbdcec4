"""Programmatic alembic for the arena store: no ini file, no env.py.

Contract:
- arena's revisions live in ``migrations/versions`` (named, ordered: ``0001_initial``, ``0002_search``, ...);
- the applied revision is kept in ``arena_alembic_version`` (never alembic's default ``alembic_version``, which
  Optuna owns when it shares the database), and only ``arena_*`` tables are ever compared or touched;
- ``read_status`` only reads; ``migrate`` runs inside the caller's transaction, which the caller has made
  exclusive (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory lock), so concurrent openers cannot race.

Only ``store.py`` calls this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import Connection

from arena.db.models import Base

VERSION_TABLE = "arena_alembic_version"
TABLE_PREFIX = "arena_"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """alembic ``include_name`` filter: arena's own tables only (Optuna's and alembic's are someone else's)."""
    if type_ == "table":
        return name is not None and name.startswith(TABLE_PREFIX) and name != VERSION_TABLE
    return True


def script_directory() -> ScriptDirectory:
    return ScriptDirectory(str(MIGRATIONS_DIR))


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None, "arena ships at least one migration"
    return head


def known_revisions() -> list[str]:
    """Every revision this code knows, oldest first."""
    return [s.revision for s in reversed(list(script_directory().walk_revisions()))]


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands. ``state``: blank (no arena schema), current, pending (older), newer (unknown)."""

    current: str | None
    head: str
    pending: list[str] = field(default_factory=list)
    state: str = "current"

    def as_dict(self) -> dict[str, Any]:
        return {"current": self.current, "head": self.head, "pending": list(self.pending), "state": self.state}


def migration_context(conn: Connection) -> MigrationContext:
    """A MigrationContext that uses arena's version table and ignores non-arena tables."""
    return MigrationContext.configure(
        conn,
        opts={"version_table": VERSION_TABLE, "include_name": include_name, "target_metadata": Base.metadata},
    )


def read_status(conn: Connection) -> SchemaStatus:
    """Read-only: the database's revision against this code's revisions."""
    heads = migration_context(conn).get_current_heads()
    head = head_revision()
    if not heads:
        return SchemaStatus(current=None, head=head, pending=known_revisions(), state="blank")
    current = heads[0] if len(heads) == 1 else ",".join(heads)
    known = known_revisions()
    if len(heads) != 1 or current not in known:
        return SchemaStatus(current=current, head=head, pending=[], state="newer")
    pending = known[known.index(current) + 1 :]
    return SchemaStatus(current=current, head=head, pending=pending, state="pending" if pending else "current")


def migrate(conn: Connection, target: str = "head") -> list[str]:
    """Upgrade to ``target`` (a revision of this code, default head) inside ``conn``'s open, exclusive
    transaction; return the revisions applied, oldest first. Never downgrades.

    The caller checks ``read_status(conn)`` first (under the same lock) and refuses a newer schema.
    """
    status = read_status(conn)
    if status.state == "newer":  # the caller's check makes this unreachable; never touch an unknown schema
        raise RuntimeError(f"refusing to migrate unknown schema {status.current}")
    known = known_revisions()
    goal = status.head if target == "head" else target
    if goal not in known:
        raise ValueError(f"unknown target revision {target!r}; known: {', '.join(known)}")
    todo = [rev for rev in status.pending if known.index(rev) <= known.index(goal)]
    if not todo:
        return []
    script = script_directory()

    def upgrade(rev: Any, context: Any) -> Any:
        return script._upgrade_revs(goal, rev)

    try:
        with EnvironmentContext(Config(), script, fn=upgrade, destination_rev=goal) as env:
            env.configure(
                connection=conn,
                target_metadata=Base.metadata,
                version_table=VERSION_TABLE,
                include_name=include_name,
            )
            env.run_migrations()
    except (CommandError, RevisionError) as e:  # pragma: no cover - a broken revision chain is a packaging bug
        raise RuntimeError(f"arena migrations are broken: {e}") from e
    return todo
