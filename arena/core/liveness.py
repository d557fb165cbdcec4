"""Whether the process that owns something is still the same process (claims on runs, trials of a search, a child's
driver, spool files, the dashboard): one answer for every owner, so none of them can disagree about a zombie, a
reused pid or another user's process."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str | None:
    """A process's start time (clock ticks since boot, Linux ``/proc``), to tell a live owner from a dead one whose
    pid was reused; None if it is gone, a zombie, or there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def pid_exists(pid: int) -> bool:
    """Whether any process (a zombie too) has this pid on this host; another user's process counts."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists; signalling it is just not ours to do
        return True
    return True


def still_running(pid: int, start: str | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` (None: not known) still runs on this host. A zombie has
    ended; a pid reused by another process (another start time) has ended; without /proc only the pid is known."""
    if not pid_exists(pid):
        return False
    now = process_start(pid)
    if now is None:  # a zombie on Linux; elsewhere the pid is all there is to go on
        return not Path("/proc/self/stat").exists()
    return start is None or start == now
