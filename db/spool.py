"""The spool: finished runs that the store could not take (locked, full, unreachable), kept as files until it can.

A run is hours of compute and its result a few KB, so a failed final write must never lose it. ``Store.record_run``
keeps a run here when its transaction fails, and every ``Store(url)`` records the spooled runs of its own URL first
thing (``Store._drain_spool``). One JSON file per run, ``<arena home>/spool/<run key>.json``, written through a
temporary file and a rename, so a file in the spool is always whole. A drain claims a file by renaming it to
``….claimed-<pid>`` first, so two processes opening the store at once never record the same run twice; a claim
whose process died is claimed again. Only ``store.py`` uses this module. Nothing happens at import.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from arena.core.home import arena_home
from arena.core.liveness import pid_exists
from arena.db.engine import sqlite_file

CLAIMED = ".claimed-"


def spool_dir() -> Path:
    """``<arena home>/spool``: created by the first run kept there."""
    return arena_home() / "spool"


def keep(url: str, result: dict[str, Any], key: str, **record_args: Any) -> Path:
    """Write one run (``RunResult.to_dict()``) and the ``record_run`` arguments for the store at ``url``; return the
    file. OSError when even this cannot be written (then the caller says so)."""
    folder = spool_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    tmp = folder / f".{key}.json.tmp-{os.getpid()}-{threading.get_ident()}"
    try:
        tmp.write_text(json.dumps({"url": url, "result": result, **record_args}, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def pending(url: str) -> list[Path]:
    """The spooled runs meant for the store at ``url`` (unclaimed, or claimed by a process that is gone)."""
    folder = spool_dir()
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.json*"), key=_mtime):  # oldest failure first
        if path.name.startswith(".") or (CLAIMED in path.name and pid_alive(path.name.rsplit(CLAIMED, 1)[1])):
            continue
        try:
            target = json.loads(path.read_text(encoding="utf-8")).get("url")
        except (OSError, ValueError):
            continue  # unreadable: left for a person to look at, never deleted
        if isinstance(target, str) and same_store(target, url):
            out.append(path)
    return out


def claim(path: Path) -> Path | None:
    """Rename a pending file to this process's claim; None when another process claimed it first."""
    claimed = path.with_name(f"{path.name.split(CLAIMED, 1)[0]}{CLAIMED}{os.getpid()}")
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return None
    return claimed


def release(claimed: Path) -> None:
    """Give a claimed file back (the store could not take it yet): the next command tries again."""
    os.replace(claimed, claimed.with_name(claimed.name.split(CLAIMED, 1)[0]))


def load(claimed: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(claimed.read_text(encoding="utf-8"))
    return data


def same_store(a: str, b: str) -> bool:
    """Whether two URLs name one store: the same SQLite file (however the path is spelled), else the same URL."""
    fa, fb = sqlite_file(a), sqlite_file(b)
    if fa is not None or fb is not None:
        return fa is not None and fb is not None and fa.resolve() == fb.resolve()
    try:
        return make_url(a).render_as_string(hide_password=False) == make_url(b).render_as_string(hide_password=False)
    except ArgumentError:
        return a == b


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def pid_alive(pid_text: str) -> bool:
    """Whether the process with this pid (as text) still runs (another user's counts as running)."""
    try:
        return pid_exists(int(pid_text))
    except ValueError:
        return False
