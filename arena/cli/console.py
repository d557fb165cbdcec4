"""The consoles every CLI module prints through: one place decides the width of piped output."""

from __future__ import annotations

from rich.console import Console


def make_console(stderr: bool = False) -> Console:
    """A rich Console; piped output (CI logs, `| less`) gets 160 columns instead of rich's 80-column default."""
    return Console(stderr=stderr, width=None if Console(stderr=stderr).is_terminal else 160)


console = make_console()
err_console = make_console(stderr=True)
