"""The arena command line: one typer app, grouped by noun. ``main`` turns every ArenaError into one red line and
exit 1. The commands live in ``runs``, ``boards``, ``admin`` and ``search``; this module only assembles them, adds
``--version``, and shows flags as flags in ``--help``."""

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from arena.cli import admin, boards, runs, search
from arena.cli.console import console, err_console
from arena.core.errors import ArenaError


def _blank_flag_types(cmd: Any, ctx: Any) -> None:
    """typer's help prints a type column for every option, ``<bool>`` for flags too (``--json <bool>``,
    ``--pinned-batches/--pageable-batches <bool>``, ``--help <bool>``), which reads as if a flag took a value. An
    empty metavar leaves that column blank for flags; every command below ``cmd`` gets it, help options included."""
    for param in [*cmd.params, cmd.get_help_option(ctx)]:
        if param is not None and getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for sub in getattr(cmd, "commands", {}).values():
        _blank_flag_types(sub, ctx)


class _ArenaGroup(TyperGroup):
    """The root group: hands out its commands with flags shown as flags (``_blank_flag_types``)."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            _blank_flag_types(cmd, ctx)
        return cmd

    def get_params(self, ctx: Any) -> Any:
        _blank_flag_types(self, ctx)
        return super().get_params(ctx)


app = typer.Typer(
    name="arena",
    cls=_ArenaGroup,
    help="A fair tournament for RWKV-6 ∥ Mamba-2 hybrid variants: frozen protocol, paired seeds, "
    "evidence-based champions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"arena {admin.version()}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", help="Print the installed arena version and exit.", callback=_print_version, is_eager=True)
    ] = False,
) -> None:
    """Options of arena itself (the help text is the app's)."""

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
    from arena.runner.processes import stacks_on_sigusr1

    stacks_on_sigusr1()
    try:
        app()
    except ArenaError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted: finished runs are stored; run the same command to resume[/yellow]")
        sys.exit(130)
    finally:
        from arena.runner.standby import end_ahead

        end_ahead()  # a worker process started ahead of a command that failed before it trained


if __name__ == "__main__":
    main()
