"""The commands that train: ``arena run``, ``arena submit``, ``arena tournament``. Parse, call, render.

No ``from __future__ import annotations`` here: typer reads the annotations at run time.
"""

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from arena.cli import options as o
from arena.cli.common import (
    check_paired_seeds,
    existing_store,
    on_engine,
    open_store,
    parse_hparams,
    run_options,
    spec_from_flags,
    writable,
)
from arena.cli.console import console
from arena.cli.plans import deciding, device_for, fit, missing_jobs, shas, train
from arena.core.errors import ArenaError


def run(
    variant: Annotated[str, typer.Argument(help="A variant name or a path to a variant file.")],
    seed: Annotated[int, typer.Option("--seed", help="The seed (fixes init and data order).")] = 0,
    preset: o.Preset = "phase2",
    steps: o.Steps = None,
    track: o.Track = None,
    data: o.Data = None,
    sets: o.Set = None,
    hp: o.Hp = None,
    device: o.Device = "auto",
    backend: o.Backend = "auto",
    mode: o.Mode = "auto",
    timeout: o.Timeout = None,
    workers: o.Workers = None,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    db: o.Db = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not read or write the store.")] = False,
    rerun: o.Rerun = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """Train one variant under the spec with one seed (memoized in the store) and print the result."""
    from arena.cli.console import err_console
    from arena.cli.progress import single_run_progress
    from arena.cli.views import print_result
    from arena.orchestration.entries import Entry, resolve_variant
    from arena.orchestration.execute import register
    from arena.runner.provenance import basis_for
    from arena.runner.trials import run_trial

    spec = spec_from_flags(preset, steps, None, track, data, sets)
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw)
    store = None if no_store else existing_store(db)
    loaded = resolve_variant(variant, store, spec, data)  # a bad or unknown variant fails here: nothing written
    entry = Entry.of(loaded, parse_hparams(hp))
    basis = basis_for(options)
    notes = err_console if as_json else console  # with --json, stdout holds the JSON and nothing else
    stored = store.get_run(entry.key(spec, seed, basis)) if store is not None else None
    if stored is not None and not rerun:
        notes.print(f"[dim]memoized: run #{stored.id} (use --rerun to recompute)[/dim]")
        _emit_result(stored.result, as_json)
        if not as_json:
            print_result(console, stored.result, spec)
        return
    # issue #16: the plan and its estimate; a --timeout it cannot meet is refused here, before anything is written
    options = fit(notes, store, spec, [loaded.sha256], options, device_for(options, basis), timeout, later=())
    if not no_store and store is None:
        store = open_store(db)
    if store is not None:  # issue #16: a store that cannot be written fails now, not after training; the rows go
        register(writable(store), spec, [entry])  # first, so that only the run can fail later (and is spooled)
    with single_run_progress(err_console if as_json else console, f"{loaded.name} seed {seed}", spec.steps) as on_event:
        result = run_trial(spec, loaded, seed, entry.hparams, options=options, on_event=on_event, basis=basis)
    if store is not None:
        store.record_run(result, replace=rerun)
    _emit_result(result, as_json)
    if not as_json:
        print_result(console, result, spec)
    if result.status not in ("ok",):
        raise typer.Exit(2)


def _emit_result(result: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")


def submit(
    file: Annotated[str, typer.Argument(help="Path to the variant file.")],
    no_run: Annotated[bool, typer.Option("--no-run", help="Only validate and register.")] = False,
    preset: o.Preset = "phase2",
    steps: o.Steps = None,
    seeds: o.Seeds = None,
    track: o.Track = None,
    data: o.Data = None,
    sets: o.Set = None,
    device: o.Device = "auto",
    backend: o.Backend = "auto",
    mode: o.Mode = "auto",
    timeout: o.Timeout = None,
    workers: o.Workers = None,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    pack: o.Pack = "auto",
    engine: o.Engine = "local",
    ray_address: o.RayAddress = None,
    gpu_share: o.GpuShare = None,
    db: o.Db = None,
) -> None:
    """Validate and register a variant, run it on the spec's seeds, and ask the champion registry for a verdict."""
    from arena.cli.views import print_outcome
    from arena.orchestration.checkpoints import prune_checkpoints
    from arena.orchestration.contest import Contests
    from arena.orchestration.engines import open_engine, start_ahead
    from arena.orchestration.entries import Entry
    from arena.orchestration.execute import register
    from arena.runner.inspection import inspect_one
    from arena.runner.loader import read_file
    from arena.runner.provenance import basis_for

    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    if not no_run:
        check_paired_seeds(spec, "arena submit (its challenge)")  # issue #16: refused before anything trains
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw, pack,
                          len(spec.seeds))
    options = on_engine(options, engine, ray_address, gpu_share)
    if not no_run:
        start_ahead(options)  # the first worker's start-up overlaps the file's check
    found = inspect_one(read_file(file), file, spec, data_flag=data)
    loaded, n_params = found.loaded, found.n_params
    store = existing_store(db)
    if not no_run:  # issue #16: the plan and its estimate before anything is written (a --timeout it cannot meet)
        basis = basis_for(options)
        todo = missing_jobs(store, spec, [Entry.of(loaded)], spec.seeds, basis)
        options = fit(console, store, spec, shas(todo), options, device_for(options, basis), timeout)
    store = open_store(db) if store is None else writable(store)
    existing = store.latest_variant(loaded.name)
    if existing is not None and existing.path != loaded.path and existing.sha256 != loaded.sha256:
        raise ArenaError(
            f"variant name '{loaded.name}' is already registered from {existing.path}; {file} declares it too "
            "— rename one"
        )
    entry = Entry.of(loaded)
    register(store, spec, [entry])
    version = "new version" if existing is not None and existing.sha256 != loaded.sha256 else "registered"
    console.print(f"[green]✓[/green] {loaded.name} ({loaded.variant.kind}) {version}: sha {loaded.sha256[:12]}, "
                  f"{n_params:,} params at {spec.label}")
    if no_run:
        return
    contests = Contests(store, spec, options, basis, on_note=lambda text: console.print(f"  [dim]{text}[/dim]"),
                        trainer=lambda jobs, title: train(console, store, spec, jobs, options, basis,
                                                          contests.checkpoint_dir, title=title))
    with open_engine(options):  # Ray: joined (or started) once for the whole challenge
        # issue #16: the entry's runs under the progress display, then the decision's own runs the same way
        train(console, store, spec, todo, options, basis, contests.checkpoint_dir, title=entry.name)
        console.print(deciding(spec, [contests.league]), highlight=False)
        outcomes = contests.challenge(entry)
        for outcome in outcomes:
            print_outcome(console, outcome)
    prune_checkpoints(store, spec, contests.checkpoint_dir)  # issue #16: only the champions' runs keep theirs


def tournament(
    preset: o.Preset = "phase2",
    steps: o.Steps = None,
    seeds: o.Seeds = None,
    track: o.Track = None,
    data: o.Data = None,
    sets: o.Set = None,
    variants: Annotated[str | None, typer.Option("--variants", help="Comma list of names (default: all).")] = None,
    device: o.Device = "auto",
    backend: o.Backend = "auto",
    mode: o.Mode = "auto",
    timeout: o.Timeout = None,
    workers: o.Workers = None,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    pack: o.Pack = "auto",
    engine: o.Engine = "local",
    ray_address: o.RayAddress = None,
    gpu_share: o.GpuShare = None,
    rerun: o.Rerun = False,
    rerun_failed: o.RerunFailed = None,
    db: o.Db = None,
) -> None:
    """Run every registered, shipped and tuned entry under the spec; then one champion decision per league and the
    leaderboard."""
    from arena.cli.progress import TournamentProgress
    from arena.cli.views import print_leaderboard, print_outcome
    from arena.core.home import checkpoints_dir
    from arena.orchestration.checkpoints import prune_checkpoints
    from arena.orchestration.engines import open_engine
    from arena.orchestration.execute import execute, register
    from arena.orchestration.tournament import decide, prepare

    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    check_paired_seeds(spec, "a tournament")  # issue #16: refused before anything trains
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw, pack,
                          len(spec.seeds))
    options = on_engine(options, engine, ray_address, gpu_share)
    failed = parse_statuses(rerun_failed)
    store = existing_store(db)
    # Ray: joined (or started) once, for the runs and the decisions. Opened before the entry check, so that the
    # first slots' start-up (a worker process, kernel imports, a CUDA context) overlaps it on either engine.
    with open_engine(options) as fleet:
        fleet.start_ahead()
        # Checking the files (each imported, built and probed for causality in a clean process) takes seconds per
        # entry: say so at once rather than after it (issue #16).
        with _status("checking the entries: each variant file imported, built and checked in a clean process"):
            the_plan = prepare(store, spec, options, variants.split(",") if variants else None, rerun=rerun,
                               rerun_failed=failed)
        for line in the_plan.refused:  # a file that fails its check sits out; the others compete
            console.print(f"[yellow]skipped[/yellow] {escape(line)}", highlight=False)
        options = fit(console, store, spec, shas(the_plan.jobs), options, device_for(options, the_plan.basis), timeout,
                      later=[e.loaded.sha256 for e in the_plan.entries])  # issue #16: before anything is written
        if store is None:
            store = open_store(db)
        else:
            writable(store)  # issue #16: a locked or read-only store fails now, before anything trains
        register(store, spec, the_plan.entries)
        leagues = ", ".join(f"{name} ({len(es)})" for name, es in the_plan.leagues.items())
        console.print(
            f"tournament {spec.label}: {len(the_plan.entries)} entries × {len(spec.seeds)} seeds · "
            f"{len(the_plan.jobs)} to run, {the_plan.memoized} memoized · {options.workers} worker(s) · "
            f"leagues {leagues} · "
            f"{the_plan.basis.label}", highlight=False,
        )
        ckpt = str(checkpoints_dir())
        if fleet.name != "local":
            console.print(f"engine {fleet.label()}", highlight=False)
        with TournamentProgress(console, list(the_plan.jobs), spec.steps, fleet.slots) as progress:
            execute(store, spec, the_plan.jobs, options, the_plan.basis, checkpoint_dir=ckpt,
                    on_progress=progress.on_event, on_done=progress.on_done, rerun=rerun or bool(failed),
                    on_skip=lambda jobs, why: console.print(
                        f"[yellow]not stored[/yellow] {len(jobs)} run(s) of {jobs[0].entry.name}: {escape(why)} "
                        "(arena's failure, not the variant's; run the command again)", highlight=False))
        # issue #16: it may train fresh seeds; say so, and show them training as the tournament's runs were
        console.print(deciding(spec, the_plan.leagues), highlight=False)
        outcomes = decide(store, the_plan, options, checkpoint_dir=ckpt,
                          on_note=lambda text: console.print(f"  [dim]{escape(text)}[/dim]"),
                          trainer=lambda jobs, title: train(console, store, spec, jobs, options, the_plan.basis,
                                                            ckpt, title=title))
        for outcome in outcomes:
            print_outcome(console, outcome)
    prune_checkpoints(store, spec, ckpt)  # issue #16: decided; only the champions' runs keep their checkpoints
    print_leaderboard(console, store, spec.hash, "table")


def _status(text: str) -> Any:
    """The spinner (plain lines off a terminal) of a phase with no steps to count: ``arena.cli.progress.status``."""
    from arena.cli.progress import status

    return status(console, text)


def parse_statuses(text: str | None) -> tuple[str, ...]:
    """``--rerun-failed crashed,timeout``: failure statuses (``ok`` and ``pruned`` are not failures)."""
    if not text:
        return ()
    allowed = ("diverged", "timeout", "crashed", "rejected")
    statuses = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in statuses if s not in allowed]
    if bad or not statuses:
        raise ArenaError(f"--rerun-failed: '{bad[0] if bad else text}' is not a failure status; "
                         f"choose from {','.join(allowed)}")
    return statuses
