"""CLI nouns besides runs: variants, db, doctor, noise, champions, autotune."""

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from arena.cli import options as o
from arena.cli.common import (
    check_paired_seeds,
    existing_store,
    open_store,
    reading_store,
    run_options,
    spec_from_flags,
    writable,
)
from arena.cli.console import console
from arena.core.errors import ArenaError

variants_app = typer.Typer(help="List and check variant files.", no_args_is_help=True)
db_app = typer.Typer(help="Show and apply database migrations; export a store and import it elsewhere.",
                    no_args_is_help=True)
champions_app = typer.Typer(
    help="The champion history and the current champion's artifacts.", invoke_without_command=True
)
autotune_app = typer.Typer(
    help="Carry the GPU kernels' autotune choices between machines, so both compute with the same configs.",
    no_args_is_help=True,
)


@variants_app.command("list")
def variants_list(
    preset: Annotated[str, typer.Option("--preset", help="Spec whose size the parameter counts use.")] = "phase2",
    db: Annotated[str | None, typer.Option("--db", help="Also list variants registered in this store.")] = None,
) -> None:
    """Every shipped (and registered) variant with its kind, parameter count at the spec size, and summary."""

    from arena.core.spec import preset as get_preset
    from arena.orchestration.entries import candidates
    from arena.runner.inspection import inspect_sources

    spec = get_preset(preset)
    try:
        store = existing_store(db)
    except ArenaError:
        if db is not None:
            raise
        store = None
    found = {n: c for n, c in candidates(store).items() if c.origin == "file"}
    names = sorted(found)
    inspected = inspect_sources([(found[n].source, found[n].path) for n in names], spec)
    t = Table(title=f"variants · params at {spec.label}")
    for col in ("name", "kind", "params", "source", "summary"):
        t.add_column(col, justify="right" if col == "params" else "left")
    for name, result in zip(names, inspected, strict=True):
        origin = "shipped" if found[name].path.startswith(str(_shipped_dir())) else "registered"
        if isinstance(result, ArenaError):
            t.add_row(name, "—", "—", origin, Text(f"refused: {result}", style="red"))
            continue
        info = result.loaded.variant
        t.add_row(name, info.kind, f"{result.n_params:,}", origin, Text(info.summary))  # plain text: no markup
    console.print(t)


def _shipped_dir() -> Path:
    from arena.runner.loader import builtin_dir

    return builtin_dir()


@variants_app.command("check")
def variants_check(
    file: Annotated[str, typer.Argument(help="Path to a variant file.")],
    preset: Annotated[str, typer.Option("--preset", help="Spec to validate against.")] = "phase2",
) -> None:
    """Validate a variant file (import, declaration, ranges, shape, finite, budget, causality); store nothing."""
    from arena.core.spec import preset as get_preset
    from arena.runner.inspection import inspect_one
    from arena.runner.loader import read_file

    spec = get_preset(preset)
    found = inspect_one(read_file(file), file, spec)  # in a worker process, under the static policy and limits
    loaded = found.loaded
    console.print(f"[green]✓[/green] {escape(file)}: {loaded.name} ({loaded.variant.kind}) is valid at "
                  f"{spec.label}: {found.n_params:,} params (budget {spec.param_budget:,}), causal, finite",
                  highlight=False)


@db_app.command("status")
def db_status(db: o.Db = None) -> None:
    """The store's URL, its schema revision and any pending migrations. Looking creates nothing: with no store
    yet it says so (one line, exit 1)."""
    from arena.db.engine import sqlite_file
    from arena.db.store import Store, display, schema_status

    url = db or Store.default_url()
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise ArenaError(f"no store yet at {display(url)}: `arena db upgrade` creates it (so does the first "
                         "command that writes, e.g. arena tournament); or point --db / ARENA_DB at yours")
    status = schema_status(url)
    console.print(f"database: {display(url)}")
    console.print(f"schema:   {status['current'] or 'blank'} (head {status['head']})")
    pending = status["pending"]
    console.print(f"pending:  {', '.join(pending) if pending else 'none'}")


@db_app.command("upgrade")
def db_upgrade(db: o.Db = None) -> None:
    """Apply pending migrations."""
    from arena.db.store import Store, upgrade

    applied = upgrade(db or Store.default_url())
    console.print(f"applied: {', '.join(applied)}" if applied else "already at head")


def doctor() -> None:
    """The arena version, store, home and data; torch, CUDA and GPU; which kernels import; which backend each
    pathway would use. Creates no file (the store and the corpus are only looked at)."""
    import torch

    from arena.core.home import arena_home
    from arena.db.engine import sqlite_file
    from arena.db.store import Store, display
    from arena.model import backend

    t = Table(title="arena doctor", show_header=False)
    t.add_column(style="bold")
    t.add_column()
    t.add_row("arena", version())
    url = Store.default_url()
    path = sqlite_file(url)
    missing = " (does not exist yet: the first command that writes creates it)" if path and not path.exists() else ""
    t.add_row("store", Text(display(url) + missing))  # as plain text: a URL or path may hold [brackets]
    t.add_row("arena home", Text(str(arena_home())))
    t.add_row("data", _data_status())
    t.add_row("torch", torch.__version__)
    t.add_row("CUDA", f"{torch.version.cuda} · available: {torch.cuda.is_available()}")
    if torch.cuda.is_available():
        t.add_row("GPU", f"{torch.cuda.get_device_name(0)} ×{torch.cuda.device_count()}")
        status = backend.kernel_status()
        for name, state in status.items():
            t.add_row(name, "[green]ok[/green]" if state == "ok" else f"[red]{state}[/red]")
        t.add_row("RWKV-6 WKV uses", "kernel (fla chunk_rwkv6)" if status["fla.chunk_rwkv6"] == "ok" else "torch_chunk")
        ssd_ok = status["mamba_ssm.mamba_chunk_scan_combined"] == "ok"
        t.add_row("Mamba-2 SSD uses", "kernel (mamba_chunk_scan_combined)" if ssd_ok else "torch_chunk")
        conv_ok = status["causal_conv1d.causal_conv1d_fn"] == "ok"
        t.add_row("Mamba-2 conv uses", "causal_conv1d_fn" if conv_ok else "F.conv1d")
    else:
        t.add_row("kernels", "not imported: no CUDA device (the pure-torch reference is used)")
        t.add_row("RWKV-6 WKV uses", "torch_chunk")
        t.add_row("Mamba-2 SSD uses", "torch_chunk (conv: F.conv1d)")
    t.add_row("ARENA_BACKEND", backend.requested())
    from arena.model.autotune import cache_dir, results

    t.add_row("autotune cache", f"{cache_dir()} ({len(results())} results; `arena autotune export/import` carries)")
    console.print(t)


def version() -> str:
    """The installed distribution's version (importlib.metadata), or 'unknown' when arena runs uninstalled."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("arena")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def _data_status() -> Text:
    """The tinyshakespeare file a run would use (``resolve_corpus``'s order), verified, or why there is none. Never
    downloads: with no ARENA_DATA and nothing cached, it says so (a run would download into the cache)."""
    import os

    from arena.runner.corpus import SHAKESPEARE_FILE, cache_dir, resolve_corpus

    cached = cache_dir() / SHAKESPEARE_FILE
    if not os.environ.get("ARENA_DATA") and not cached.is_file():
        return Text.assemble(("not found", "yellow"), f": ARENA_DATA is not set and {cached} does not exist; the "
                             f"first run downloads it there, or set ARENA_DATA=PATH (the file, or a folder holding "
                             f"{SHAKESPEARE_FILE}) or pass --data PATH")
    try:
        path = resolve_corpus("shakespeare", None)
    except ArenaError as exc:
        return Text(str(exc), style="red")
    origin = "ARENA_DATA" if os.environ.get("ARENA_DATA") else "data cache"
    return Text(f"{path} ({origin}; size and sha256 verified)")


@db_app.command("export")
def db_export(
    file: Annotated[Path, typer.Argument(help="The file to write (gzipped JSON), e.g. study.arena.json.gz.")],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    db: o.Db = None,
) -> None:
    """Write the whole store (runs, variants, entries, specs, tournaments, decisions; not the claims of runs in
    flight) to FILE, to carry it to another machine: `arena db import FILE` there."""
    if file.exists() and not force:
        raise ArenaError(f"{file}: already exists; choose another path or pass --force to replace it")
    if not file.parent.is_dir():
        raise ArenaError(f"{file}: its folder {file.parent} does not exist; create it or choose another path")
    with reading_store(db) as store:
        counts = store.export_to(file)
    console.print(f"[green]✓[/green] {_counted(counts)} from {store.display_url} → {file}")


@db_app.command("import")
def db_import(
    file: Annotated[Path, typer.Argument(help="A file made by `arena db export`.")],
    db: o.Db = None,
) -> None:
    """Copy FILE into a store that holds nothing yet (a new one is created): every run, memoized again, and the
    champion history as it was. The file is checked first; a refused one writes nothing."""
    from arena.db.transfer import read_export

    tables = read_export(file)
    with open_store(db) as store:
        counts = store.import_tables(tables, file)
    console.print(f"[green]✓[/green] {_counted(counts)} from {file} → {store.display_url}")


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {name.removeprefix('arena_').replace('_', ' ')}" for name, n in counts.items())


@autotune_app.command("export")
def autotune_export(
    file: Annotated[Path, typer.Argument(help="The .tar.gz to write.")],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
) -> None:
    """Write this machine's Triton autotune results (TRITON_CACHE_DIR or ~/.triton/cache) to FILE."""
    from arena.model.autotune import cache_dir, export_cache

    n = export_cache(file, force=force)
    console.print(f"[green]✓[/green] {n} autotune results from {cache_dir()} → {file}")


@autotune_app.command("import")
def autotune_import(file: Annotated[Path, typer.Argument(help="A file made by `arena autotune export`.")]) -> None:
    """Put FILE's autotune results into this machine's Triton cache: later GPU runs use those configs."""
    from arena.model.autotune import cache_dir, import_cache

    n = import_cache(file)
    console.print(f"[green]✓[/green] {n} autotune results from {file} → {cache_dir()}")


def noise(
    preset: o.Preset = "phase2",
    steps: o.Steps = None,
    seeds: o.Seeds = None,
    track: o.Track = None,
    data: o.Data = None,
    sets: o.Set = None,
    measure: Annotated[bool, typer.Option("--measure", help="Run the reference variant's missing seeds.")] = False,
    device: o.Device = "auto",
    backend: o.Backend = "auto",
    mode: o.Mode = "auto",
    timeout: o.Timeout = None,
    workers: o.Workers = None,
    gpus: o.Gpus = None,
    pinned_batches: o.PinnedBatches = True,
    fused_adamw: o.FusedAdamw = True,
    db: o.Db = None,
) -> None:
    """Show (or measure) the spec's noise floor: the reference variant's seed-to-seed std of final val loss."""
    from arena.orchestration.contest import Contests
    from arena.runner.provenance import basis_for

    spec = spec_from_flags(preset, steps, seeds, track, data, sets)
    options = run_options(device, backend, mode, timeout, workers, gpus, data, pinned_batches, fused_adamw)
    if measure:
        check_paired_seeds(spec, "arena noise --measure")  # a spread needs two seeds: refused before training
    basis = basis_for(options)
    store, options = _measure(db, spec, options, basis, timeout) if measure else (reading_store(db), options)
    contests = Contests(store, spec, options, basis)
    sigma = contests.noise(measure=measure)
    if sigma is None:
        console.print(f"spec {spec.label}: noise floor not measured yet ({spec.reference_variant} needs ≥ 2 ok seeds); "
                      "run: arena noise --measure")
        raise typer.Exit(1)
    console.print(f"spec {spec.label}: noise floor σ = {sigma:.5f} nats ({spec.reference_variant}, "
                  f"{len(spec.seeds)} seeds, {basis.label}); "
                  f"promotion needs mean(d) ≥ δ = max(margin, σ) = {contests.settings.delta(sigma):.5f}")


def _measure(db: str | None, spec: Any, options: Any, basis: Any, given: float | None) -> tuple[Any, Any]:
    """``noise --measure``'s runs, never silent (issue #16): the reference's missing tournament seeds, estimated
    before anything is written (a --timeout they cannot meet is refused), then trained under the progress display.
    The store (opened for writing) and the options with the per-run limit."""
    from arena.cli.plans import device_for, fit, missing_jobs, shas, train
    from arena.core.home import checkpoints_dir
    from arena.orchestration.entries import Entry, resolve_variant
    from arena.orchestration.execute import register

    store = existing_store(db)
    ref = Entry.of(resolve_variant(spec.reference_variant, store, spec, options.data_flag))
    todo = missing_jobs(store, spec, [ref], spec.seeds, basis)
    options = fit(console, store, spec, shas(todo), options, device_for(options, basis), given, later=())
    store = open_store(db) if store is None else writable(store)
    register(store, spec, [ref])
    train(console, store, spec, todo, options, basis, str(checkpoints_dir()), title=f"noise floor ({ref.name})")
    return store, options


@champions_app.callback()
def champions_history(
    ctx: typer.Context,
    spec: Annotated[str | None, typer.Option("--spec", help="Spec hash prefix or preset; default: all specs.")] = None,
    db: o.Db = None,
) -> None:
    """The champion history: who dethroned whom, when, and by how much (every decision, append-only)."""
    if ctx.invoked_subcommand is not None:
        return
    from arena.orchestration.specs import find_spec_hash

    store = reading_store(db)
    spec_hash = find_spec_hash(store, spec) if spec else None
    rows = store.decisions(spec_hash)
    if not rows:
        console.print("no champion decisions yet; a tournament crowns the first: arena tournament --preset smoke")
        return
    console.print(_history_table(rows, console.width))


def _history_table(rows: list[Any], width: int | None) -> Table:
    """The decisions as a table within ``width``: the full one when it fits, else the compact one (shorter
    dates, then fewer columns: spec, league, champion, p and mean d give way, in that order) whose "why" wraps
    between words, never through a number (issue #16)."""
    from arena.cli.render import Col, fitted

    means, ps, decisions = [], [], []
    for r in rows:
        ev = r.evidence or {}
        confirmations = (ev.get("family") or {}).get("confirmations") or []
        conf: dict[str, Any] = next((c for c in confirmations if c.get("name") == r.challenger_name), {})
        decisions.append(Text("by default") if r.by_default else Text("promoted", "green") if r.promoted
                         else Text("kept"))
        mean, p = conf.get("mean", ev.get("mean")), conf.get("p", ev.get("p"))
        means.append("—" if mean is None else f"{mean:+.4f}")
        ps.append("—" if p is None else (">0.999" if p > 0.999 else f"{p:.3g}"))  # "1" would read as certainty
    why = [Text((r.evidence or {}).get("message") or r.reason or "") for r in rows]  # the rule's own words

    def cols(when: str, keep: bool) -> list[Col]:
        return [Col("when", "left", [r.decided_at.strftime(when) for r in rows]),
                Col("spec", "left", [r.spec_hash[:8] for r in rows], keep=5 * keep),
                Col("league", "left", [r.league for r in rows], keep=4 * keep),
                Col("challenger", "left", [Text(r.challenger_name) for r in rows]),
                Col("champion", "left", [Text(r.champion_name or "—") for r in rows], keep=3 * keep),
                Col("decision", "left", decisions), Col("mean d", "right", means, keep=1 * keep),
                Col("p", "right", ps, keep=2 * keep), Col("why", "left", why, wrap=True, min_width=24)]

    title = "champion history (mean d and p: on the fresh confirmation seeds)"
    table = fitted(cols("%Y-%m-%d %H:%M", False), width, title=title)
    table = table or fitted(cols("%m-%d %H:%M", True), width, title=title)
    return table or fitted(cols("%m-%d %H:%M", True), None, title=title) or Table()


@champions_app.command("show")
def champions_show(
    spec: o.SpecRef = None,
    db: o.Db = None,
) -> None:
    """Where the current champion's source snapshot and best-seed checkpoint are kept."""
    from arena.champions.registry import Registry
    from arena.orchestration.specs import find_spec_hash

    store = reading_store(db)
    spec_hash = find_spec_hash(store, spec)
    row = store.champion(spec_hash)
    spec_row = store.spec(spec_hash)
    if row is None or spec_row is None:
        raise ArenaError(f"spec {spec_hash[:8]} has no champion yet; run: arena tournament")
    folder = Registry(store, spec_row).champion_dir(row.challenger_name, row.challenger_sha)
    tag = " (by default)" if row.by_default else ""
    console.print(f"champion of {spec_hash[:8]}: [bold]{row.challenger_name}[/bold]{tag} "
                  f"since {row.decided_at:%Y-%m-%d %H:%M}")
    console.print(f"artifacts: {folder}")
    for f in sorted(Path(folder).glob("*")) if Path(folder).exists() else []:
        console.print(f"  {f.name}  ({f.stat().st_size:,} bytes)")
