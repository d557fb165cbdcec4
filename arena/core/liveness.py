"""Whether the process that owns something is still the same process (claims on runs, trials of a search)."""

from __future__ import annotations

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
