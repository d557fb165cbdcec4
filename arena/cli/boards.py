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
    """Print the leaderboard of a spec: each league ranked on the shared seeds, Δ vs the champion with its paired
    95% CI, the promotion rule's verdict, parameter counts."""
    from arena.cli.render import FORMATS
    from arena.cli.views import print_leaderboard
    from arena.orchestration.specs import find_spec_hash

    if fmt not in FORMATS:
        raise ArenaError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    store = reading_store(db)
    print_leaderboard(console, store, find_spec_hash(store, spec), fmt)


specs_app = typer.Typer(help="The specs in the store: list them, label them.", no_args_is_help=False,
                        invoke_without_command=True)


@specs_app.callback()
def specs_list(ctx: typer.Context, db: o.Db = None) -> None:
    """List every spec: hash, label, name, runs, tournaments, and which one the leaderboard shows by default."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from arena.orchestration.specs import find_spec_hash

    store = reading_store(db)
    default = find_spec_hash(store, None)
    done = store.tournaments(completed=True)
    t = Table(title="specs (the leaderboard's default is marked ▶)")
    for col in ("", "hash", "label", "name", "runs", "tournaments", "created (UTC)"):
        t.add_column(col)
    for row in store.specs():
        n_done = sum(1 for d in done if d.spec_hash == row.hash)
        t.add_row("▶" if row.hash == default else "", row.hash[:8], row.label or "—", row.name, str(row.n_runs),
                  str(n_done), f"{row.created:%Y-%m-%d %H:%M}")
    console.print(t)


@specs_app.command("label")
def specs_label(
    spec: Annotated[str, typer.Argument(help="Spec hash (prefix), current label or preset name.")],
    label: Annotated[str, typer.Argument(help="The new label; '' removes it.")],
    db: o.Db = None,
) -> None:
    """Give a spec a label that --spec accepts everywhere (e.g. 'main')."""
    from arena.orchestration.specs import find_spec_hash

    store = reading_store(db)
    spec_hash = find_spec_hash(store, spec)
    store.label_spec(spec_hash, label or None)
    console.print(f"spec {spec_hash[:8]}: label {label or '(removed)'}")


def show(
    what: Annotated[list[str], typer.Argument(
        help="Variant or entry names (compared with each other), or run ids (#12 or 12).", show_default=False)],
    spec: o.SpecRef = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write a figure (.png, .svg or .pdf): for names, their comparison on the leaderboard's basis "
        "and the tournament seeds (see --plot-kind); for run ids, their train and val curves.")] = None,
    plot_kind: Annotated[str, typer.Option(
        "--plot-kind", help="curves (val loss: mean over seeds with a min–max band) | means (final val loss: mean "
        "and 95% CI per name) | paired (per-seed Δ vs the champion or --vs: mean and 95% CI).")] = "curves",
    vs: Annotated[str | None, typer.Option(
        "--vs", help="The reference of --plot-kind paired (default: the league's champion, else the first name).")
    ] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="Print the runs (curves, diagnostics, basis) as JSON, and nothing else, on stdout.")] = False,
    curves: Annotated[Path | None, typer.Option(
        "--curves", help="Write every shown run's curves to FILE.csv or FILE.json: run_id, variant, seed, split "
        "(train | val | final), step, loss.")] = None,
    db: o.Db = None,
) -> None:
    """Show runs: a variant's (or several variants') runs, or runs by id; metrics, diagnostics and loss curves in
    the terminal, as a figure (--plot) or exported (--json, --curves)."""
    from arena.cli.compare import check_output
    from arena.cli.console import err_console
    from arena.cli.plots import KINDS
    from arena.cli.views import show_target

    if plot_kind not in KINDS:
        raise ArenaError(f"--plot-kind must be one of {', '.join(KINDS)}, not '{plot_kind}'")
    if plot is not None:
        check_output(plot, "--plot", (".png", ".svg", ".pdf"))
    if curves is not None:
        check_output(curves, "--curves", (".csv", ".json"))
    show_target(console, reading_store(db), what, spec, plot, plot_kind=plot_kind, vs=vs, as_json=as_json,
                curves=curves, note=err_console if as_json else console)
