"""The arena command line: parses, calls the library, renders. Every user error is one red line and exit 1."""

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from arena.console import console, err_console
from arena.errors import ArenaError

if TYPE_CHECKING:  # the CLI imports these lazily, per command, to start fast
    from arena.db.store import Store
    from arena.runner.spec import Spec
    from arena.variants_loader import LoadedVariant

app = typer.Typer(
    name="arena",
    help="A fair tournament for RWKV-6 ∥ Mamba-2 hybrid variants: frozen protocol, paired seeds, "
    "evidence-based champions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# -- shared options ----------------------------------------------------------------------------------------------
PresetOpt = Annotated[str, typer.Option("--preset", help="Benchmark preset: phase2 (the seeds' setting) or smoke.")]
StepsOpt = Annotated[int | None, typer.Option("--steps", help="Training steps (derives a new spec).")]
SeedsOpt = Annotated[str | None, typer.Option("--seeds", help="Seeds: a count (5) or a list (0,1,2); new spec.")]
TrackOpt = Annotated[str | None, typer.Option("--track", help="shakespeare | mqar | text:PATH (new spec).")]
DataOpt = Annotated[str | None, typer.Option("--data", help="Path to tinyshakespeare.txt (or ARENA_DATA).")]
DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL of the store (or ARENA_DB).")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override a spec field: --set lr=1e-3 (new spec).")]
WorkersOpt = Annotated[int, typer.Option("--workers", help="Parallel worker processes (GPUs are shared round-robin).")]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Per-run time limit in seconds; a run past it is a timeout.")
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto | cpu | cuda | cuda:N")]
BackendOpt = Annotated[str, typer.Option("--backend", help="auto | kernel | torch_chunk | torch_recurrent")]


def build_spec(
    preset: str, steps: int | None = None, seeds: str | None = None, track: str | None = None,
    data: str | None = None, sets: list[str] | None = None,
) -> "Spec":
    """The spec the flags describe (preset, then --track, then --steps/--seeds/--set), validated."""
    from arena.runner.data import spec_for_track
    from arena.runner.spec import preset as get_preset

    spec = get_preset(preset)
    changes: dict[str, Any] = {}
    if steps is not None:
        if steps <= 0:
            raise ArenaError(f"--steps must be a positive number of training steps, got {steps}")
        changes["steps"] = steps
        changes["warmup_steps"] = min(spec.warmup_steps, max(0, steps // 5))
        changes["eval_every"] = min(spec.eval_every, steps)
    if seeds is not None:
        changes["seeds"] = parse_seeds(seeds)
    for item in sets or []:
        if "=" not in item:
            raise ArenaError(f"--set wants field=value, got '{item}'")
        key, value = item.split("=", 1)
        changes[key.strip()] = value.strip()
    if track is not None and track != spec.track:
        spec = spec_for_track(spec, track, data)
    if changes:
        spec = spec.derive(**changes)
    return spec


def parse_seeds(text: str) -> tuple[int, ...]:
    try:
        if "," not in text and "-" not in text:
            n = int(text)
            if n <= 0:
                raise ArenaError(f"--seeds must be positive, got {n}")
            return tuple(range(n))
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ArenaError(f"--seeds wants a count (5) or a comma list (0,1,2), got '{text}'") from None
    if not seeds:
        raise ArenaError(f"--seeds wants a count (5) or a comma list (0,1,2), got '{text}'")
    return seeds


def open_store(db: str | None) -> "Store":
    """The store, created (and migrated) if it does not exist yet: for commands that write."""
    from arena.db.store import Store

    return Store(db or Store.default_url())


def existing_store(db: str | None) -> "Store | None":
    """The store, or None while its SQLite file does not exist: looking (or failing early) creates nothing."""
    from arena.db.engine import sqlite_file
    from arena.db.store import Store

    url = db or Store.default_url()
    path = sqlite_file(url)
    return None if path is not None and not path.exists() else Store(url)


def reading_store(db: str | None) -> "Store":
    """The store for a command that only reads; a one-line error (and no new file) when there is none yet."""
    from arena.db.engine import display
    from arena.db.store import Store

    store = existing_store(db)
    if store is None:
        raise ArenaError(f"no arena store at {display(db or Store.default_url())} yet; "
                         "start with: arena tournament --preset smoke (or point --db / ARENA_DB at yours)")
    return store


def resolve_variant(ref: str, store: Any = None) -> "LoadedVariant":
    """A variant by file path, shipped name, or registered name (with did-you-mean)."""
    from arena.config import did_you_mean
    from arena.variants_loader import builtin_variants, load_source, load_variant

    if ref.endswith(".py") or Path(ref).exists():
        return load_variant(ref)
    shipped = {lv.name: lv for lv in builtin_variants()}
    if ref in shipped:
        return shipped[ref]
    if store is not None:
        row = store.latest_variant(ref)
        if row is not None:
            return load_source(row.source, row.path)
        names = set(shipped) | {v.name for v in store.variants()}
    else:
        names = set(shipped)
    raise ArenaError(f"unknown variant '{ref}'{did_you_mean(ref, names)}; see: arena variants list")


# -- commands ----------------------------------------------------------------------------------------------------
@app.command()
def run(
    variant: Annotated[str, typer.Argument(help="A variant name or a path to a variant file.")],
    seed: Annotated[int, typer.Option("--seed", help="The seed (fixes init and data order).")] = 0,
    preset: PresetOpt = "phase2",
    steps: StepsOpt = None,
    track: TrackOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    hp: Annotated[list[str] | None, typer.Option("--hp", help="Hyperparameter: --hp gate_init=0.3")] = None,
    device: DeviceOpt = "auto",
    backend: BackendOpt = "auto",
    mode: Annotated[str, typer.Option("--mode", help="auto | eager | graph (CUDA graph capture)")] = "auto",
    timeout: TimeoutOpt = 3600.0,
    db: DbOpt = None,
    no_store: Annotated[bool, typer.Option("--no-store", help="Do not read or write the store.")] = False,
    rerun: Annotated[bool, typer.Option("--rerun", help="Recompute even if this run is stored.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole result as JSON.")] = False,
) -> None:
    """Train one variant under the spec with one seed (memoized in the store) and print the result."""
    from arena.cli_views import print_result
    from arena.progress import single_run_progress
    from arena.runner.worker import run_trial
    from arena.tournament import Entry, register

    spec = build_spec(preset, steps, None, track, data, sets)
    store = None if no_store else existing_store(db)
    loaded = resolve_variant(variant, store)  # an unknown name fails here, before a store is created
    if not no_store and store is None:
        store = open_store(db)
    entry = Entry.of(loaded, parse_hparams(hp))
    if store is not None:
        stored = store.get_run(entry.key(spec, seed))
        if stored is not None and not rerun:
            console.print(f"[dim]memoized: run #{stored.id} (use --rerun to recompute)[/dim]")
            _emit_result(stored.result, as_json)
            return
    with single_run_progress(console, f"{loaded.name} seed {seed}", spec.steps) as on_event:
        result = run_trial(
            spec, loaded, seed, entry.hparams, timeout_s=timeout, on_event=on_event, device=device,
            backend=backend, mode=mode, data_flag=data,
        )
    if store is not None:
        register(store, spec, [entry])
        store.record_run(result, replace=rerun)
    _emit_result(result, as_json)
    if not as_json:
        print_result(console, result, spec)
    if result.status not in ("ok",):
        raise typer.Exit(2)


def _emit_result(result: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, default=str) + "\n")


def parse_hparams(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        if "=" not in item:
            raise ArenaError(f"--hp wants name=value, got '{item}'")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise ArenaError(f"--hp {key}: '{value}' is not a number") from None
    return out


@app.command()
def submit(
    file: Annotated[str, typer.Argument(help="Path to the variant file.")],
    no_run: Annotated[bool, typer.Option("--no-run", help="Only validate and register.")] = False,
    preset: PresetOpt = "phase2",
    steps: StepsOpt = None,
    seeds: SeedsOpt = None,
    track: TrackOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    workers: WorkersOpt = 1,
    timeout: TimeoutOpt = 3600.0,
    device: DeviceOpt = "auto",
    backend: BackendOpt = "auto",
    db: DbOpt = None,
) -> None:
    """Validate and register a variant, run it on the spec's seeds, and ask the champion registry for a verdict."""
    from arena.champions.registry import Registry
    from arena.tournament import Entry, RunOptions, register
    from arena.variants_loader import check_variant, load_variant

    spec = build_spec(preset, steps, seeds, track, data, sets)
    loaded = load_variant(file)
    n_params = check_variant(loaded, spec)
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
    options = RunOptions(workers=workers, timeout_s=timeout, device=device, backend=backend, data_flag=data)
    registry = Registry(store, spec, options, console=console)
    verdict = registry.challenge(entry)
    console.print(verdict.message)


@app.command()
def tournament(
    preset: PresetOpt = "phase2",
    steps: StepsOpt = None,
    seeds: SeedsOpt = None,
    track: TrackOpt = None,
    data: DataOpt = None,
    sets: SetOpt = None,
    variants: Annotated[str | None, typer.Option("--variants", help="Comma list of names (default: all).")] = None,
    workers: WorkersOpt = 1,
    timeout: TimeoutOpt = 3600.0,
    device: DeviceOpt = "auto",
    backend: BackendOpt = "auto",
    rerun: Annotated[bool, typer.Option("--rerun", help="Recompute runs that are already stored.")] = False,
    db: DbOpt = None,
) -> None:
    """Run every registered and shipped variant under the spec, then print the leaderboard and champion decision."""
    from arena.champions.registry import Registry
    from arena.cli_views import print_leaderboard
    from arena.progress import TournamentProgress
    from arena.tournament import RunOptions, execute, plan, register, tournament_entries

    spec = build_spec(preset, steps, seeds, track, data, sets)
    store = existing_store(db)
    entries = tournament_entries(store, spec, variants.split(",") if variants else None)  # may fail: nothing written
    if store is None:
        store = open_store(db)
    register(store, spec, entries)
    jobs = plan(store, spec, entries, spec.seeds, rerun=rerun)
    memo = len(entries) * len(spec.seeds) - len(jobs)
    console.print(
        f"tournament {spec.label}: {len(entries)} entries × {len(spec.seeds)} seeds · {len(jobs)} to run, "
        f"{memo} memoized · {workers} worker(s)"
    )
    options = RunOptions(workers=workers, timeout_s=timeout, device=device, backend=backend, data_flag=data)
    with TournamentProgress(console, jobs, spec.steps, workers) as progress:
        execute(store, spec, jobs, options, on_progress=progress.on_event, on_done=progress.on_done, rerun=rerun)
    registry = Registry(store, spec, options, console=console)
    for line in registry.after_tournament(entries):
        console.print(line)
    print_leaderboard(console, store, spec.hash, "table")


@app.command()
def leaderboard(
    spec: Annotated[
        str | None, typer.Option("--spec", help="Spec hash (prefix) or preset name; default: latest.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table | json | csv | markdown")] = "table",
    db: DbOpt = None,
) -> None:
    """Print the leaderboard of a spec: mean val loss with 95% CI, Δ and p vs the champion, and more."""
    from arena.cli_views import find_spec_hash, print_leaderboard
    from arena.render import FORMATS

    if fmt not in FORMATS:
        raise ArenaError(f"--format must be one of {', '.join(FORMATS)}, not '{fmt}'")
    store = reading_store(db)
    print_leaderboard(console, store, find_spec_hash(store, spec), fmt)


@app.command()
def show(
    what: Annotated[str, typer.Argument(help="A variant name or a run id (#12 or 12).")],
    spec: Annotated[str | None, typer.Option("--spec", help="Spec hash (prefix) or preset name.")] = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Write the loss curves to this PNG file.")] = None,
    db: DbOpt = None,
) -> None:
    """Show a variant's runs (or one run): metrics, diagnostics and loss curves in the terminal or as a PNG."""
    from arena.cli_views import show_target

    show_target(console, reading_store(db), what, spec, plot)


def _register_nouns() -> None:
    # The other noun groups live in their own modules (each imports its heavy libraries lazily).
    from arena import cli_admin

    cli_admin.register(app)
    try:
        from arena import cli_tune
    except ImportError:  # pragma: no cover - the search commands are optional at build time
        return
    cli_tune.register(app)


_register_nouns()


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
