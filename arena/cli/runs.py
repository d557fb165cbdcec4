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
    open_store,
    parse_hparams,
    run_options,
    spec_from_flags,
    writable,
)
from arena.cli.console import console
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
    timeout: o.Timeout = 3600.0,
    workers: o.Workers = 1,
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
    from arena.runner.worker import run_trial

    spec = spec_from_flags(preset, steps, None, track, data, sets)
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw)
    store = None if no_store else existing_store(db)
    loaded = resolve_variant(variant, store, spec, data)  # a bad or unknown variant fails here: nothing written
    if not no_store and store is None:
        store = open_store(db)
    entry = Entry.of(loaded, parse_hparams(hp))
    basis = basis_for(options)
    if store is not None:
        stored = store.get_run(entry.key(spec, seed, basis))
        if stored is not None and not rerun:
            notes = err_console if as_json else console  # with --json, stdout holds the JSON and nothing else
            notes.print(f"[dim]memoized: run #{stored.id} (use --rerun to recompute)[/dim]")
            _emit_result(stored.result, as_json)
            if not as_json:
                print_result(console, stored.result, spec)
            return
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
    timeout: o.Timeout = 3600.0,
    workers: o.Workers = 1,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    db: o.Db = None,
) -> None:
    """Validate and register a variant, run it on the spec's seeds, and ask the champion registry for a verdict."""
    from arena.cli.views import print_outcome
    from arena.orchestration.contest import Contests
    from arena.orchestration.entries import Entry
    from arena.orchestration.execute import prune_checkpoints, register
    from arena.runner.inspection import inspect_one
    from arena.runner.loader import read_file
    from arena.runner.provenance import basis_for

    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    if not no_run:
        check_paired_seeds(spec, "arena submit (its challenge)")  # issue #16: refused before anything trains
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw)
    found = inspect_one(read_file(file), file, spec, data_flag=data)
    loaded, n_params = found.loaded, found.n_params
    store = open_store(db)
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
    contests = Contests(store, spec, options, basis_for(options),
                        on_note=lambda text: console.print(f"  [dim]{text}[/dim]"))
    for outcome in contests.challenge(entry):
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
    timeout: o.Timeout = 3600.0,
    workers: o.Workers = 1,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    rerun: o.Rerun = False,
    rerun_failed: o.RerunFailed = None,
    db: o.Db = None,
) -> None:
    """Run every registered, shipped and tuned entry under the spec; then one champion decision per league and the
    leaderboard."""
    from arena.cli.progress import TournamentProgress
    from arena.cli.views import print_leaderboard, print_outcome
    from arena.core.home import checkpoints_dir
    from arena.orchestration.execute import execute, prune_checkpoints, register
    from arena.orchestration.tournament import decide, prepare

    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    check_paired_seeds(spec, "a tournament")  # issue #16: refused before anything trains
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw)
    failed = parse_statuses(rerun_failed)
    store = existing_store(db)
    the_plan = prepare(store, spec, options, variants.split(",") if variants else None, rerun=rerun,
                       rerun_failed=failed)
    for line in the_plan.refused:  # a file that fails its check sits out; the others compete
        console.print(f"[yellow]skipped[/yellow] {escape(line)}", highlight=False)
    if store is None:
        store = open_store(db)
    else:
        writable(store)  # issue #16: a locked or read-only store fails now, before anything trains
    register(store, spec, the_plan.entries)
    leagues = ", ".join(f"{name} ({len(es)})" for name, es in the_plan.leagues.items())
    console.print(
        f"tournament {spec.label}: {len(the_plan.entries)} entries × {len(spec.seeds)} seeds · "
        f"{len(the_plan.jobs)} to run, {the_plan.memoized} memoized · {workers} worker(s) · leagues {leagues} · "
        f"{the_plan.basis.label}", highlight=False,
    )
    ckpt = str(checkpoints_dir())
    with TournamentProgress(console, list(the_plan.jobs), spec.steps, workers) as progress:
        execute(store, spec, the_plan.jobs, options, the_plan.basis, checkpoint_dir=ckpt,
                on_progress=progress.on_event, on_done=progress.on_done, rerun=rerun or bool(failed),
                on_skip=lambda jobs, why: console.print(
                    f"[yellow]not stored[/yellow] {len(jobs)} run(s) of {jobs[0].entry.name}: {escape(why)} "
                    "(arena's failure, not the variant's; run the command again)", highlight=False))
    for outcome in decide(store, the_plan, options, checkpoint_dir=ckpt,
                          on_note=lambda text: console.print(f"  [dim]{escape(text)}[/dim]")):
        print_outcome(console, outcome)
    prune_checkpoints(store, spec, ckpt)  # issue #16: decided; only the champions' runs keep their checkpoints
    print_leaderboard(console, store, spec.hash, "table")


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
