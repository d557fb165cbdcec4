"""The one exception type the CLI turns into a single clear line and a non-zero exit."""

from __future__ import annotations


class ArenaError(Exception):
    """A user-facing error: its message is one line that names the file or flag and the fix."""
