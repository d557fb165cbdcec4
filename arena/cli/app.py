"""The arena command line: one typer app, grouped by noun. ``main`` turns every ArenaError into one red line and
exit 1. The commands live in ``runs``, ``boards``, ``admin`` and ``search``; this module only assembles them."""

import sys

import typer

from arena.cli import admin, boards, runs, search
from arena.cli.console import err_console
from arena.core.errors import ArenaError

app = typer.Typer(
    name="arena",
    help="A fair tournament for RWKV-6 ∥ Mamba-2 hybrid variants: frozen protocol, paired seeds, "
    "evidence-based champions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command()(runs.run)
app.command()(runs.submit)
app.command()(runs.tournament)
app.command()(boards.leaderboard)
app.command()(boards.show)
app.add_typer(boards.specs_app, name="specs")
app.add_typer(admin.variants_app, name="variants")
app.add_typer(admin.db_app, name="db")
app.add_typer(admin.champions_app, name="champions")
app.add_typer(admin.autotune_app, name="autotune")
app.command("doctor")(admin.doctor)
app.command("noise")(admin.noise)
app.command("tune")(search.tune)
app.command("adopt")(search.adopt)
app.command("dashboard")(search.dashboard)


def main() -> None:
    try:
        app()
    except ArenaError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: finished runs are stored; run the same command to resume[/yellow]")
        sys.exit(130)


if __name__ == "__main__":
    main()
