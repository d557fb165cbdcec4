"""CLI commands of the search: ``arena tune``, ``arena adopt``, ``arena dashboard``. Parse, call
``arena.orchestration.search`` / ``arena.orchestration.dashboard``, render; errors are ArenaError (one line).

No ``from __future__ import annotations`` here: typer reads the annotations at run time.
"""

from typing import Annotated, Any

import typer

from arena.cli import options as o
from arena.cli.common import check_tune_flags, open_store, run_options, spec_from_flags
from arena.cli.console import console
from arena.core.errors import ArenaError

VariantArg = Annotated[str, typer.Argument(help="A variant name (arena variants list) or a variant .py file.")]


def _params(text: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise ArenaError("--params wants a comma list of hyperparameter names, e.g. gate_init,lr_mult")
    return names


def tune(
    variant: Annotated[
        str | None, typer.Argument(help="A variant name or .py file; leave out with --all.", show_default=False)
    ] = None,
    *,
    every: Annotated[
        bool, typer.Option("--all", help="Tune every shipped and registered variant with the same budget, then "
                                         "adopt each best trial (one league: tuned-<trials>).")
    ] = False,
    trials: Annotated[int, typer.Option("--trials", help="Trials to run in this call (one budget for all workers).")],
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds after which no new trial starts (running ones finish).")
    ] = None,
    preset: o.Preset = "phase2",
    steps: o.Steps = None,
    seeds: o.Seeds = None,
    track: o.Track = None,
    data: o.Data = None,
    sets: o.Set = None,
    params: Annotated[str, typer.Option("--params", help="Hyperparameters to search (those the variant declares).")] = (
        "gate_init,lr_mult"
    ),
    resume: Annotated[bool, typer.Option("--resume", help="Continue the existing study of this variant and spec.")] = (
        False
    ),
    do_adopt: Annotated[bool, typer.Option("--adopt", help="Then freeze the best trial as <variant>@tuned-N.")] = (
        False
    ),
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed (record it; resumed runs are not bit-exact).")] = 0,
    trial_timeout: Annotated[
        float, typer.Option("--trial-timeout", help="Per-trial time limit in seconds; past it the trial FAILs.")
    ] = 3600.0,
    device: o.Device = "auto",
    backend: o.Backend = "auto",
    mode: o.Mode = "auto",
    workers: Annotated[int, typer.Option("--workers", help="Optimizing processes (each with its runner worker).")] = 1,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    storage: o.Storage = None,
    db: o.Db = None,
) -> None:
    """Search a variant's hyperparameters (Optuna TPE, median pruning) on the tuning seed, never the tournament's.

    The spec flags are those of ``arena tournament``, so a tuned entry competes under the same spec hash."""
    import optuna

    from arena.orchestration.entries import resolve_variant
    from arena.orchestration.search import tune as search

    if (variant is None) == (not every):
        raise ArenaError("arena tune: name one VARIANT, or pass --all (every variant, the same budget)")
    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    options = run_options(device, backend, mode, trial_timeout, workers, gpus, data, pinned_batches, fused_adamw)
    names = _params(params)
    check_tune_flags(trials, timeout, storage)  # issue #16: before the store is opened, so nothing is written
    store = open_store(db)
    try:
        if every:
            from arena.orchestration.entries import tournament_entries

            found, refused = tournament_entries(store, spec, None, data)
            for line in refused:
                console.print(f"[yellow]skipped[/yellow] {line}", highlight=False)
            todo = [e.loaded for e in found if e.origin == "file"]
        else:
            assert variant is not None
            todo = [resolve_variant(variant, store, spec, data)]  # inspected in a worker: its code never runs here
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are shown by the progress display instead
        for loaded in todo:
            if every:
                console.print(f"[bold]{loaded.name}[/bold]: {trials} trials", highlight=False)
            with _TrialProgress(console, trials) as progress:
                summary = search.tune(
                    loaded, spec, trials=trials, store=store, options=options, timeout_s=timeout,
                    params=names, resume=resume, storage=storage, seed=seed, on_trial=progress.on_trial,
                    on_start=progress.start,
                )
            _print_summary(console, summary)
            if do_adopt or every:
                entry = search.adopt(loaded, spec, store, summary.storage)
                console.print(f"adopted trial #{summary.best_trial} as [bold]{entry}[/bold]")
    finally:
        store.close()


def adopt(
    variant: VariantArg,
    preset: o.Preset = "phase2",
    steps: o.Steps = None,
    seeds: o.Seeds = None,
    track: o.Track = None,
    data: o.Data = None,
    sets: o.Set = None,
    name: Annotated[str | None, typer.Option("--name", help="Entry name (default: <variant>@tuned-N).")] = None,
    storage: o.Storage = None,
    db: o.Db = None,
) -> None:
    """Freeze the best trial of the variant's study as a tuned entry that competes on the tournament seeds."""
    from arena.orchestration.entries import resolve_variant
    from arena.orchestration.search import tune as search

    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    store = open_store(db)
    try:
        loaded = resolve_variant(variant, store, spec, data)
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
    storage: o.Storage = None,
    db: o.Db = None,
) -> None:
    """Serve optuna-dashboard on the search storage (history, importances, pruning curves) until Ctrl-C or SIGTERM.
    With no study there yet it says how to make one and exits 1."""
    from arena.db.store import Store
    from arena.orchestration.dashboard import serve
    from arena.orchestration.search.storage import default_storage

    served = serve(storage or default_storage(db or Store.default_url()), host, port)
    if served.stopped_by is not None:
        console.print(f"dashboard stopped ({served.stopped_by})", highlight=False)
        return
    if served.code:
        raise ArenaError(f"optuna-dashboard exited with code {served.code}")


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
