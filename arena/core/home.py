"""Where arena keeps its files: the arena home (``ARENA_HOME``), its SQLite database and its artifacts.

Default home: ``$XDG_DATA_HOME/arena`` or ``~/.local/share/arena``. Nothing is created at import; callers create
folders when they write.
"""

from __future__ import annotations

import os
from pathlib import Path


def arena_home() -> Path:
    """The arena home: ``$ARENA_HOME``, else ``$XDG_DATA_HOME/arena``, else ``~/.local/share/arena``."""
    env = os.environ.get("ARENA_HOME")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "arena"


def artifacts_dir() -> Path:
    """Champion snapshots and checkpoints: ``<home>/artifacts``."""
    return arena_home() / "artifacts"


def checkpoints_dir() -> Path:
    """Per-run checkpoints of the latest tournament (pruned to the champions' after each decision)."""
    return artifacts_dir() / "runs"


def default_db_url() -> str:
    """The store's URL: ``$ARENA_DB`` if set, else ``sqlite:///<arena home>/arena.db``. Touches no disk."""
    return os.environ.get("ARENA_DB") or f"sqlite:///{arena_home() / 'arena.db'}"
