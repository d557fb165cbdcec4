"""CLI commands of the search: ``arena tune``, ``arena adopt``, ``arena dashboard``. Parse, call arena.tune /
arena.dashboard, render. The lead's ``arena.cli`` calls ``register(app)``; errors are ArenaError (one line).

No ``from __future__ import annotations`` here: typer reads the annotations at run time.
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from arena.console import console
from arena.errors import ArenaError

VariantArg = Annotated[str, typer.Argument(help="A shipped variant name (arena variants list) or a variant .py file.")]
PresetOpt = Annotated[str, typer.Option("--preset", help="Benchmark preset: phase2 (the seeds' setting) or smoke.")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Training steps per trial (derives a new spec).")]
TrackOpt = Annotated[str | None, typer.Option("--track", help="shakespeare | mqar | text:PATH (derives a new spec).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Path to tinyshakespeare.txt (or ARENA_DATA).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the arena store (or ARENA_DB).")]
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage: a journal file path, sqlite:///F, postgresql+psycopg://…, redis://… "
        "(default: optuna.journal next to a SQLite store; the store's URL on PostgreSQL).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the ``tune``, ``adopt`` and ``dashboard`` commands to ``app``."""
    app.command("tune")(tune)
    app.command("adopt")(adopt)
    app.command("dashboard")(dashboard)


def _spec(preset: str, steps: int | None, track: str | None, data: str | None) -> Any:
    # The same flag → spec rules as `arena run`/`tournament`, so a tuned entry's spec hash matches theirs.
    from arena.cli import build_spec

    return build_spec(preset, steps, None, track, data, None)


def _variant(ref: str) -> Any:
    from arena.variants_loader import builtin, load_variant

    if ref.endswith(".py") or Path(ref).exists():
        return load_variant(ref)
    return builtin(ref)


def _store(db: str | None) -> Any:
    from arena.db.store import Store

    return Store(db or Store.default_url())


def _params(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise ArenaError("--params wants a comma list of hyperparameter names, e.g. gate_init,lr_mult")
    return names


def tune(
    variant: VariantArg,
    trials: Annotated[int, typer.Option("--trials", help="Trials to run in this call (one budget for all workers).")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds after which no new trial starts (running ones finish).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Optimizing processes on this machine.")] = 1,
    preset: PresetOpt = "phase2",
    steps: StepsOpt = None,
    track: TrackOpt = None,
    params: Annotated[str, typer.Option("--params", help="Hyperparameters to search (those the variant declares).")] = (
        "gate_init,lr_mult"
    ),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the existing study of this variant and spec.")] = (
        False
    ),
    do_adopt: Annotated[bool, typer.Option("--adopt", help="Afterwards, freeze the best trial as <variant>@tuned.")] = (
        False
    ),
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed (record it; resumed runs are not bit-exact).")] = 0,
    trial_timeout: Annotated[
        float, typer.Option("--trial-timeout", help="Per-trial time limit in seconds; past it the trial FAILs.")
    ] = 3600.0,
    device: Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")] = "auto",
    storage: StorageOpt = None,
    db: DbOpt = None,
    data: DataOpt = None,
) -> None:
    """Search a variant's hyperparameters (Optuna TPE, median pruning) on the tuning seed, never the tournament's."""
    import optuna

    from arena import tune as search
    from arena.variants_loader import check_variant

    spec = _spec(preset, steps, track, data)
    loaded = _variant(variant)
    check_variant(loaded, spec)
    store = _store(db)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are shown by the progress display instead
    try:
        with _TrialProgress(console, trials) as progress:
            summary = search.tune(
                loaded,
                spec,
                trials=trials,
                timeout_s=timeout,
                workers=workers,
                params=_params(params),
                resume=resume,
                storage=storage,
                store=store,
                seed=seed,
                on_trial=progress.on_trial,
                on_start=progress.start,
                trial_timeout_s=trial_timeout,
                device=device,
                data_flag=data,
            )
        _print_summary(console, summary)
        if do_adopt:
            entry = search.adopt(loaded, spec, store, summary.storage)
            console.print(f"adopted trial #{summary.best_trial} as [bold]{entry}[/bold]")
    finally:
        store.close()


def adopt(
    variant: VariantArg,
    preset: PresetOpt = "phase2",
    steps: StepsOpt = None,
    track: TrackOpt = None,
    name: Annotated[str | None, typer.Option("--name", help="Entry name (default: <variant>@tuned).")] = None,
    storage: StorageOpt = None,
    db: DbOpt = None,
    data: DataOpt = None,
) -> None:
    """Freeze the best trial of the variant's study as a tuned entry that competes on the tournament seeds."""
    from arena import tune as search

    spec = _spec(preset, steps, track, data)
    loaded = _variant(variant)
    store = _store(db)
    try:
        entry = search.adopt(loaded, spec, store, storage, name=name)
        row = store.entry(entry)
    finally:
        store.close()
    hp = ", ".join(f"{k}={v:.4g}" for k, v in (row.hparams if row else {}).items())
    console.print(f"entry [bold]{entry}[/bold]: {hp} (from {row.study_name if row else '?'})")


def dashboard(
    host: Annotated[str, typer.Option("--host", help="Address to bind (keep loopback unless you mean to share).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    storage: StorageOpt = None,
    db: DbOpt = None,
) -> None:
    """Serve optuna-dashboard on the search storage (history, importances, pruning curves) until Ctrl-C."""
    from arena.dashboard import serve
    from arena.db.store import Store
    from arena.study_storage import default_storage

    code = serve(storage or default_storage(db or Store.default_url()), host, port)
    if code:
        raise ArenaError(f"optuna-dashboard exited with code {code}")


class _TrialProgress:
    """A bar over this call's trials with the best value so far; failed trials are printed above it."""

    def __init__(self, console: Any, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(
            TextColumn("tuning"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self.task = self.progress.add_task("tuning", total=total, info="starting")
        self.started = False

    def __enter__(self) -> "_TrialProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.started:
            self.progress.stop()

    def start(self, study: str, storage: str) -> None:
        """Called once the study is open: only then is there something to show."""
        self.console.print(f"study [bold]{study}[/bold] in {storage}")
        self.progress.update(self.task, info="trial 0 of a new study runs the variant's defaults")
        self.progress.start()
        self.started = True

    def on_trial(self, event: Any) -> None:
        best = "—" if event.best_value is None else f"{event.best_value:.4f} (#{event.best_trial})"
        last = "" if event.value is None else f"{event.value:.4f}"
        self.progress.update(
            self.task, completed=event.done, info=f"#{event.number} {event.state.lower()} {last} · best {best}"
        )
        if event.state == "FAIL":
            self.progress.console.print(f"[red]trial #{event.number} failed[/red]: {event.error or '?'}")


def _print_summary(console: Any, s: Any) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_row("study", s.study_name)
    table.add_row("storage", s.storage)
    table.add_row("trials", ", ".join(f"{n} {k.lower()}" for k, n in sorted(s.n_trials.items())) + f" ({s.ran} now)")
    if s.best_value is not None:
        params = ", ".join(f"{k}={v:.4g}" for k, v in s.best_params.items())
        table.add_row("best", f"{s.best_value:.4f} (trial #{s.best_trial}: {params})")
    if s.baseline_value is not None:
        delta = "" if s.best_value is None else f" (best − baseline = {s.best_value - s.baseline_value:+.4f})"
        table.add_row("baseline", f"{s.baseline_value:.4f}{delta}")
    console.print(table)
    console.print(f"open the dashboard: {s.dashboard_hint}")
