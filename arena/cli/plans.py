"""Know before you wait: what a training command is about to run, how long that takes here, and the time limit each
run gets (issue #16). The numbers come from ``arena.orchestration.estimate``; this module prints them and trains.

* ``fit`` prints the plan (runs × steps at a speed on this device ≈ how long, and each run's time limit), and one
  yellow line when it is long on a CPU. With no ``--timeout`` it derives the limit from the estimate
  (``Estimate.limit_s``: a slow CPU run is not cut at an arbitrary hour and stored as a ``timeout``); a
  ``--timeout`` the estimate says cannot be met is refused (one line, before anything is written).
* ``train`` runs jobs under the progress display: what ``submit`` and ``noise --measure`` train before they
  decide, so they are not silent.
* ``deciding`` is the line a champion decision shows while it works (it may train fresh seeds).
"""

import dataclasses
import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # imported per command, to start fast
    from arena.core.options import RunOptions
    from arena.core.result import RunResult
    from arena.core.spec import Spec
    from arena.core.stack import Basis
    from arena.db.store import Store
    from arena.orchestration.entries import Entry, Job
    from arena.orchestration.estimate import Estimate


def device_for(options: "RunOptions", basis: "Basis | None" = None) -> str:
    """The device the runs will use: the basis's (GPU model or cpu), else what ``options`` resolve to here."""
    from arena.orchestration.estimate import device_of
    from arena.runner.provenance import resolved_device

    return device_of(basis.info) if basis is not None else resolved_device(options)


def fit(
    console: Console, store: "Store | None", spec: "Spec", variants: Sequence[str], options: "RunOptions",
    device: str, given: float | None, *, flag: str = "--timeout", later: Sequence[str] = ("",),
    parallel: int | None = None,
) -> "RunOptions":
    """Estimate a plan of one run of ``spec`` per item of ``variants`` (variant sha256s) on ``device``, print it,
    and return ``options`` with the per-run limit to use: ``given`` (the flag's value; refused with an ArenaError
    when the plan cannot meet it) or, when the flag was left out, the one the estimate derives for the plan's runs
    and for those of ``later`` (variants a decision may train after it; "": one with the typical speed). Reads the
    store's recorded speeds (``store`` None: none yet); writes nothing. An empty plan prints nothing.
    ``parallel``: runs that go at once (``estimate``'s default: one per distinct variant, up to the workers)."""
    from arena.orchestration.estimate import check_timeout, estimate, evidence

    threads = max(1, (os.cpu_count() or 1) // max(1, options.workers)) if device == "cpu" else None
    runs = evidence(store, spec) if store is not None else []
    est = estimate(spec, variants, runs, device, workers=options.workers, threads=threads, parallel=parallel,
                   pack=options.execution.pack)
    if given is not None:
        check_timeout(est, given, flag, spec.name)
    span = estimate(spec, [*variants, *later], runs, device, workers=options.workers, threads=threads,
                    pack=options.execution.pack)
    limit = given if given is not None else span.limit_s
    if est.runs:
        console.print(describe(est, spec, limit, given is not None, flag), highlight=False, soft_wrap=True)
        if est.long:
            console.print(f"[yellow]{warning(est, spec)}[/yellow]", highlight=False, soft_wrap=True)
    return dataclasses.replace(options, timeout_s=limit)


def describe(est: "Estimate", spec: "Spec", limit_s: float, given: bool, flag: str = "--timeout") -> str:
    """The plan in one line: runs × steps at a speed (and where it comes from) ≈ how long; each run's limit."""
    from arena.orchestration.estimate import duration, rate

    source = f"recorded by {est.recorded} run{'s' if est.recorded != 1 else ''}" if est.recorded else "rough default"
    why = flag if given else f"3× estimate; {flag} sets it"
    workers = f"{est.workers} worker{'s' if est.workers != 1 else ''}"
    return (f"estimate: {est.runs} run{'s' if est.runs != 1 else ''} × {est.steps} steps at ~{rate(est.tok_s)} "
            f"tok/s on {est.device} ({source}) ≈ {duration(est.total_s)} on {workers} · limit "
            f"{duration(limit_s)} a run ({why})")


def warning(est: "Estimate", spec: "Spec") -> str:
    """The one line for a plan that is long on a CPU: how long, and what to do instead."""
    from arena.orchestration.estimate import duration

    fix = "fewer --steps or --variants" if spec.name == "smoke" else "--preset smoke (minutes), or a GPU"
    return f"this takes about {duration(est.total_s)} on the CPU; for a quick look use {fix}"


def missing_jobs(store: "Store | None", spec: "Spec", entries: Sequence["Entry"], seeds: Sequence[int],
                 basis: "Basis") -> list["Job"]:
    """The entries' runs on ``seeds`` (this basis) that are not stored yet: what a command will train."""
    from arena.orchestration.entries import Job
    from arena.orchestration.execute import plan

    if store is None:
        return [Job(e, s) for s in seeds for e in entries]
    return plan(store, spec, entries, seeds, basis)


def shas(jobs: Iterable["Job"]) -> list[str]:
    return [job.entry.loaded.sha256 for job in jobs]


def source_shas(sources: Iterable[str]) -> list[str]:
    """The sha256 a variant's source is keyed on (``runner.loader``), without inspecting it."""
    return [hashlib.sha256(s.encode("utf-8")).hexdigest() for s in sources]


def train(
    console: Console, store: "Store", spec: "Spec", jobs: Sequence["Job"], options: "RunOptions", basis: "Basis",
    checkpoint_dir: str, *, title: str, slots: int | None = None,
) -> list["RunResult"]:
    """Train and record ``jobs`` under the progress display (one bar, a line per worker; plain lines off a
    terminal). A run arena's own machinery failed is not stored: one yellow line, and the next command runs it."""
    from arena.cli.progress import TournamentProgress
    from arena.orchestration.execute import execute

    if not jobs:
        return []
    with TournamentProgress(console, list(jobs), spec.steps, slots or options.workers, title=title) as progress:
        return execute(store, spec, jobs, options, basis, checkpoint_dir=checkpoint_dir, on_progress=progress.on_event,
                on_done=progress.on_done, on_skip=lambda skipped, why: console.print(
                    f"[yellow]not stored[/yellow] {len(skipped)} run(s) of {escape(skipped[0].entry.name)}: "
                    f"{escape(why)} (arena's failure, not the variant's; run the command again)", highlight=False))


def deciding(spec: "Spec", leagues: Iterable[str] | Mapping[str, Any]) -> str:
    """What a champion decision does while it works, in one line (it may train fresh seeds for its candidates)."""
    from arena.cli.render import seeds_text

    fresh = spec.contest_seeds()[len(spec.seeds):]
    names = ", ".join(leagues)
    confirm = (f"a candidate that clears the selection trains fresh seeds {seeds_text(fresh)} beside the champion"
               if fresh else "no fresh seeds to confirm on (max_seeds)")
    return f"deciding the champion of league {names} on seeds {seeds_text(spec.seeds)}: {confirm}"
