"""CLI commands of the search: ``arena tune``, ``arena adopt``, ``arena dashboard``. Parse, call
``arena.orchestration.search`` / ``arena.orchestration.dashboard``, render; errors are ArenaError (one line).

No ``from __future__ import annotations`` here: typer reads the annotations at run time.
"""

from typing import Annotated, Any

import typer

from arena.cli import options as o
from arena.cli.common import check_tune_flags, on_engine, open_store, run_options, spec_from_flags
from arena.cli.console import console
from arena.core.errors import ArenaError

# Trials a pack holds under --pack auto at most: a search learns from finished trials, and a pack's trials are all
# sampled before any of them finishes (TPE's constant liar spreads them); 8 keeps 30-trial budgets adaptive.
TUNE_AUTO_PACK = 8

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
        float | None, typer.Option("--trial-timeout", help="Per-trial time limit in seconds; past it the trial "
                                   "FAILs. Default: 3× the estimate of a trial (at least 600).")
    ] = None,
    device: o.Device = "auto",
    backend: o.Backend = "auto",
    mode: o.Mode = "auto",
    workers: Annotated[int, typer.Option("--workers", help="Optimizing processes (each with its runner worker).")] = 1,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    pack: o.TunePack = "auto",
    engine: o.Engine = "local",
    ray_address: o.RayAddress = None,
    gpu_share: o.GpuShare = None,
    storage: o.Storage = None,
    db: o.Db = None,
) -> None:
    """Search a variant's hyperparameters (Optuna TPE, median pruning) on the tuning seed, never the tournament's.

    The spec flags are those of ``arena tournament``, so a tuned entry competes under the same spec hash."""
    if (variant is None) == (not every):
        raise ArenaError("arena tune: name one VARIANT, or pass --all (every variant, the same budget)")
    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    names = _params(params)
    options = run_options(device, backend, mode, trial_timeout, workers, gpus, data, pinned_batches, fused_adamw,
                          pack, n_seeds=min(trials, TUNE_AUTO_PACK))
    options = on_engine(options, engine, ray_address, gpu_share)
    _check_pack(pack, names)
    check_tune_flags(trials, timeout, storage)  # issue #16: before the store is opened, so nothing is written
    options = _fit_trials(spec, variant, every, trials, options, trial_timeout, db)
    store = open_store(db)
    try:
        _tune_each(store, spec, every, variant, data, trials, timeout, options, names, resume, storage, seed, do_adopt)
    finally:
        store.close()


def _check_pack(pack: str, names: tuple[str, ...]) -> None:
    """``--pack N`` (N > 1) packs trials that differ in their hyperparameters: only values may differ in a pack."""
    from arena.core.hparams import VALUE_PARAMS

    shaped = [n for n in names if n not in VALUE_PARAMS]
    if pack.strip().isdigit() and int(pack) > 1 and shaped:
        raise ArenaError(f"--pack {pack}: --params {','.join(shaped)} may change the model's shape, so its trials "
                         f"cannot train as one model; use --pack 1, or search only {', '.join(VALUE_PARAMS)}")


def _tune_each(store: Any, spec: Any, every: bool, variant: str | None, data: str | None, trials: int,
               timeout: float | None, options: Any, names: tuple[str, ...], resume: bool, storage: str | None,
               seed: int, do_adopt: bool) -> None:
    """``arena tune``'s work once its flags are checked: the variants to tune, each tuned (and adopted)."""
    import optuna

    from arena.cli.progress import TrialProgress
    from arena.orchestration.engines import open_engine
    from arena.orchestration.entries import resolve_variant
    from arena.orchestration.search import tune as search

    with open_engine(options) as fleet:  # Ray: joined (or started) once for every variant of the call
        fleet.start_ahead()  # the first trials' worker (or Ray actor) starts while the files are checked
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
            with TrialProgress(console, trials) as progress:  # plain lines off a terminal
                summary = search.tune(
                    loaded, spec, trials=trials, store=store, options=options, timeout_s=timeout,
                    params=names, resume=resume, storage=storage, seed=seed, on_trial=progress.on_trial,
                    on_start=progress.start,
                )
            _print_summary(console, summary)
            if do_adopt or every:
                entry = search.adopt(loaded, spec, store, summary.storage)
                console.print(f"adopted trial #{summary.best_trial} as [bold]{entry}[/bold]")


def _fit_trials(spec: Any, variant: str | None, every: bool, trials: int, options: Any, given: float | None,
                db: str | None) -> Any:
    """The search's plan and estimate (issue #16), before the store is opened: ``trials`` runs on the tuning seed
    per variant. A --trial-timeout it cannot meet is refused; without one, the per-trial limit is derived. A
    variant that cannot be found is left to the lookup that follows (it says so in one line)."""
    from pathlib import Path

    from arena.cli.common import existing_store
    from arena.cli.plans import device_for, fit, source_shas
    from arena.orchestration.entries import candidates
    from arena.runner.loader import read_file

    store = existing_store(db)
    try:
        found = {n: c for n, c in candidates(store).items() if c.origin == "file"}
        if every:
            sources = [c.source for c in found.values()]
        elif variant in found:
            sources = [found[variant].source]
        elif variant is not None and Path(variant).is_file():
            sources = [read_file(variant)]
        else:
            return options
        return fit(console, store, spec, source_shas(sources) * trials, options, device_for(options), given,
                   flag="--trial-timeout", later=(), parallel=options.workers)
    finally:
        if store is not None:
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
