"""Plan and execute runs: memoized on (variant sha, spec hash, seed, hyperparameters), parallel over workers.

A run is written to the store in one transaction after it finished, so an interrupted tournament (Ctrl-C,
kill -9, power loss) resumes where it stopped: finished runs are found and skipped, unfinished ones were never
written. Only this process writes to the store; workers only compute.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.db.store import Store
from arena.runner.result import RunResult, run_key
from arena.runner.spec import Spec
from arena.runner.train import resolve_hparams
from arena.runner.worker import Worker, make_task
from arena.variants_loader import LoadedVariant


@dataclass(frozen=True)
class Entry:
    """A competitor: a variant file version with frozen hyperparameters (defaults, or a tuned set)."""

    name: str
    loaded: LoadedVariant
    hparams: dict[str, float]
    origin: str = "file"  # file | tuned

    @classmethod
    def of(cls, loaded: LoadedVariant, hparams: dict[str, float] | None = None, name: str | None = None,
           origin: str = "file") -> Entry:
        return cls(name or loaded.name, loaded, resolve_hparams(loaded, hparams), origin)

    def key(self, spec: Spec, seed: int) -> str:
        return run_key(self.loaded.sha256, spec.hash, seed, self.hparams)


@dataclass(frozen=True)
class Job:
    entry: Entry
    seed: int

    @property
    def label(self) -> str:
        return f"{self.entry.name} seed {self.seed}"


@dataclass
class RunOptions:
    """How runs execute (not what they compute: that is the spec)."""

    workers: int = 1
    timeout_s: float | None = 3600.0
    device: str = "auto"
    backend: str = "auto"
    mode: str = "auto"
    data_flag: str | None = None
    checkpoint_dir: str | None = None
    gpus: list[int] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def register(store: Store, spec: Spec, entries: Iterable[Entry]) -> None:
    store.add_spec(spec)
    for e in entries:
        v = e.loaded.variant
        store.add_variant(v.name, v.kind, v.summary, e.loaded.source, e.loaded.sha256, e.loaded.path)


def plan(store: Store, spec: Spec, entries: Sequence[Entry], seeds: Sequence[int], rerun: bool = False) -> list[Job]:
    """The jobs still to run (all of them with ``rerun``), seed-major so every entry gets seed 0 first."""
    jobs = []
    for seed in seeds:
        for e in entries:
            if rerun or store.get_run(e.key(spec, seed)) is None:
                jobs.append(Job(e, seed))
    return jobs


ProgressFn = Callable[[int, Job, dict[str, Any]], None]  # (worker slot, job, event)
DoneFn = Callable[[int, Job, RunResult], None]


def execute(
    store: Store,
    spec: Spec,
    jobs: Sequence[Job],
    options: RunOptions,
    *,
    on_progress: ProgressFn | None = None,
    on_done: DoneFn | None = None,
    rerun: bool = False,
) -> list[RunResult]:
    """Run the jobs on ``options.workers`` child processes; record each result as soon as it finishes."""
    todo: queue.Queue[Job] = queue.Queue()
    for job in jobs:
        todo.put(job)
    results: list[RunResult] = []
    lock = threading.Lock()
    stop = threading.Event()
    n_workers = max(1, min(options.workers, len(jobs) or 1))
    threads_each = max(1, (os.cpu_count() or 1) // n_workers)
    errors: list[BaseException] = []

    def work(slot: int) -> None:
        env = dict(options.env)
        if options.gpus:  # one GPU per worker slot, round-robin: several workers may share a GPU
            env["CUDA_VISIBLE_DEVICES"] = str(options.gpus[slot % len(options.gpus)])
        with Worker(threads=threads_each, env=env) as worker:
            while not stop.is_set():
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                ckpt = None
                if options.checkpoint_dir:
                    Path(options.checkpoint_dir).mkdir(parents=True, exist_ok=True)
                    ckpt = str(Path(options.checkpoint_dir) / f"{job.entry.key(spec, job.seed)}.pt")
                task = make_task(
                    spec, job.entry.loaded, job.seed, job.entry.hparams, device=options.device,
                    backend=options.backend, mode=options.mode, data_flag=options.data_flag, checkpoint_path=ckpt,
                )

                def progress(event: dict[str, Any], job: Job = job) -> None:
                    if on_progress:
                        on_progress(slot, job, event)

                try:
                    result = worker.run(task, options.timeout_s, progress)
                except BaseException as exc:  # an ArenaError (e.g. data) stops the whole tournament
                    errors.append(exc)
                    stop.set()
                    return
                result.variant = job.entry.name if job.entry.origin == "file" else job.entry.loaded.name
                with lock:
                    store.record_run(result, replace=rerun)
                    results.append(result)
                if on_done:
                    on_done(slot, job, result)

    pool = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n_workers)]
    for t in pool:
        t.start()
    try:
        for t in pool:
            while t.is_alive():
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        raise
    if errors:
        raise errors[0]
    return results


def tournament_entries(store: Store | None, spec: Spec, names: Sequence[str] | None = None) -> list[Entry]:
    """Every shipped variant, every registered variant (latest version), and every tuned entry; or the named ones.

    A registered file that shares a shipped variant's name replaces it (it is the newer version the user
    submitted). Every file is validated against the spec first; one bad file stops the tournament before any run.
    ``store`` None (no database yet): the shipped variants only.
    """
    from arena.config import did_you_mean
    from arena.errors import ArenaError
    from arena.variants_loader import builtin_variants, check_variant, load_source

    by_name: dict[str, Entry] = {lv.name: Entry.of(lv) for lv in builtin_variants()}
    if store is not None:
        for row in store.variants():
            if row.name in by_name and by_name[row.name].loaded.sha256 == row.sha256:
                continue
            if row.name in by_name and row.path == by_name[row.name].loaded.path:
                continue  # an older registration of a shipped file: the shipped version is current
            by_name[row.name] = Entry.of(load_source(row.source, row.path))
        for e in store.entries():
            base = store.variant(e.variant_sha)
            if base is not None:
                loaded = load_source(base.source, base.path)
                by_name[e.name] = Entry.of(loaded, e.hparams, name=e.name, origin="tuned")
    if names:
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ArenaError(
                f"--variants: unknown variant '{unknown[0]}'{did_you_mean(unknown[0], by_name)}; "
                "see: arena variants list"
            )
        by_name = {n: by_name[n] for n in names}
    checked: set[str] = set()
    for e in by_name.values():
        if e.loaded.sha256 not in checked:
            check_variant(e.loaded, spec)
            checked.add(e.loaded.sha256)
    return [by_name[k] for k in sorted(by_name)]
