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
from pathlib import Path
from typing import Any

from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.db.store import Store
from arena.orchestration.entries import Entry, Job
from arena.runner.worker import Worker, make_task


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
    checkpoint_dir: str | None = None,
    on_progress: ProgressFn | None = None,
    on_done: DoneFn | None = None,
    rerun: bool = False,
) -> list[RunResult]:
    """Run the jobs on ``options.workers`` child processes; record each result as soon as it finishes.

    With ``checkpoint_dir``, each ok run leaves its final weights there as ``<run key>.pt``."""
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
        env: dict[str, str] = {}
        if options.gpus:  # one GPU per worker slot, round-robin: several workers may share a GPU
            env["CUDA_VISIBLE_DEVICES"] = str(options.gpus[slot % len(options.gpus)])
        with Worker(threads=threads_each, env=env) as worker:
            while not stop.is_set():
                try:
                    job = todo.get_nowait()
                except queue.Empty:
                    return
                ckpt = None
                if checkpoint_dir:
                    Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
                    ckpt = str(Path(checkpoint_dir) / f"{job.entry.key(spec, job.seed)}.pt")
                task = make_task(spec, job.entry.loaded, job.seed, job.entry.hparams, options, ckpt)

                def progress(event: dict[str, Any], job: Job = job) -> None:
                    if on_progress:
                        on_progress(slot, job, event)

                try:
                    result = worker.run(task, progress)
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
