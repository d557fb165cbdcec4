"""The commands that read results: ``arena leaderboard`` and ``arena show``.

No ``from __future__ import annotations`` here: typer reads the annotations at run time.
"""

from pathlib import Path
from typing import Annotated

import typer

from arena.cli import options as o
from arena.cli.common import reading_store
from arena.cli.console import console
from arena.core.errors import ArenaError


def leaderboard(
    spec: o.SpecRef = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv | markdown")] = "table",
    db: o.Db = None,
) -> None:
    """Print the leaderboard of a spec: mean val loss with 95% CI, Δ and p vs the champion, and more."""
    from arena.cli.render import FORMATS
    from arena.cli.views import print_leaderboard
    from arena.orchestration.specs import find_spec_hash

    if fmt not in FORMATS:
        raise ArenaError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    store = reading_store(db)
    print_leaderboard(console, store, find_spec_hash(store, spec), fmt)


def show(
    what: Annotated[str, typer.Argument(help="A variant name or a run id (#12 or 12).")],
    spec: o.SpecRef = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the loss curves to this PNG file.")] = None,
    db: o.Db = None,
) -> None:
    """Show a variant's runs (or one run): metrics, diagnostics and loss curves in the terminal or as a PNG."""
    from arena.cli.views import show_target

    show_target(console, reading_store(db), what, spec, plot)
