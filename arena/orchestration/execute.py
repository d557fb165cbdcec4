"""Plan and execute runs: memoized on (variant sha, spec hash, seed, hyperparameters, code, stack), parallel over
the slots of an engine (worker processes here, or Ray actors on a cluster: ``engines``).

Variant code runs only in worker processes; this process writes the store.

A run is written to the store in one transaction after it finished, so an interrupted tournament (Ctrl-C,
kill -9, power loss) resumes where it stopped: finished runs are found and skipped, unfinished ones were never
written. Only this process writes to the store; workers (and Ray actors) only compute. Runs are claimed before they
train (``schedule``), so several drivers on one store share the work instead of repeating it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.core.errors import ArenaError
from arena.core.hparams import declared_defaults
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.db.store import Store
from arena.orchestration.engines import Engine, Runner, open_engine
from arena.orchestration.entries import Entry, Job
from arena.orchestration.schedule import Schedule, by_entry
from arena.runner.processes import MachineLost
from arena.runner.trials import run_checked, train_seeds
from arena.runner.worker import MachineryFailure, Worker

_groups = by_entry  # the jobs of each entry together (first-come order of entries, seeds in the given order)


Complete = Callable[[], list[RunResult]]  # a group's clean check still to run: its results as they are to be recorded


def _run_group(
    spec: Spec, worker: Worker, group: list[Job], options: RunOptions, basis: Basis, checkpoint_dir: str | None,
    on_progress: Callable[[Job, dict[str, Any]], None] | None,
) -> Callable[[], list[tuple[Job, RunResult]]]:
    """One entry's jobs trained in ``worker``; the returned call checks them in a clean process and gives the
    (job, result to record) pairs. The worker is free once this returns (the next group may train meanwhile)."""
    entry = group[0].entry
    by_seed = {job.seed: job for job in group}
    ckpts = {}
    if checkpoint_dir:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        ckpts = {job.seed: str(Path(checkpoint_dir) / f"{entry.key(spec, job.seed, basis)}.pt") for job in group}

    def progress(seed: int, event: dict[str, Any]) -> None:
        if on_progress:
            on_progress(by_seed[seed], event)

    started = time.time()
    try:
        check = _train_group(spec, worker, entry, list(by_seed), options, basis, ckpts, progress)
    except BaseException:  # nothing of the group is stored: its checkpoints would only fill the disk
        _remove_new(ckpts.values(), started)
        raise

    def complete() -> list[tuple[Job, RunResult]]:
        try:
            done = check()
        except BaseException:
            _remove_new(ckpts.values(), started)
            raise
        for result in done:
            result.variant = entry.name if entry.origin == "file" else entry.loaded.name
            path = ckpts.get(result.seed)
            if path is not None:  # a worker killed while saving leaves a temporary file; a rejected run, a checkpoint
                _remove_new([path], started, keep=result.status == "ok")
            if result.status != "ok":
                result.checkpoint_path = None
        return [(by_seed[r.seed], r) for r in done]

    return complete


def _train_group(
    spec: Spec, worker: Worker, entry: Entry, seeds: list[int], options: RunOptions, basis: Basis,
    ckpts: dict[int, str], progress: Callable[[int, dict[str, Any]], None],
) -> Complete:
    pending = train_seeds(worker, spec, entry.loaded, seeds, entry.hparams, options, on_event=progress,
                          checkpoint_paths=ckpts, basis=basis)
    # A SIGKILL is what the OOM killer sends, whoever used the memory: run such a seed once more in a fresh
    # process before its crash counts (a variant that needs the memory itself is killed again). Rare: checked now.
    killed = [r.seed for r in pending.results if r.status == "crashed" and "SIGKILL" in (r.error or "")]
    if not killed:
        return pending.finish
    done = pending.finish()
    worker.kill()
    again = {r.seed: r for r in run_checked(worker, spec, entry.loaded, killed, entry.hparams, options,
                                             on_event=progress, checkpoint_paths=ckpts, basis=basis)}
    for r in again.values():
        r.env["retried"] = "after SIGKILL"
    retried = [again.get(r.seed, r) for r in done]
    return lambda: retried


def _remove_new(paths: Iterable[str], since: float, keep: bool = False) -> None:
    """Delete the temporary files of these checkpoints, and (unless ``keep``) the checkpoints written since
    ``since``; older ones belong to stored runs (``--rerun`` writes to the same name) and are left."""
    for path in paths:
        for p in [*([] if keep else [Path(path)]), *Path(path).parent.glob(f"{Path(path).name}.tmp-*")]:
            with contextlib.suppress(OSError):
                if p.stat().st_mtime >= since - 1:
                    p.unlink()


def register(store: Store, spec: Spec, entries: Iterable[Entry]) -> None:
    store.add_spec(spec)
    for e in entries:
        v = e.loaded.variant
        store.add_variant(v.name, v.kind, v.summary, e.loaded.source, e.loaded.sha256, e.loaded.path,
                          declared_defaults(v))


def plan(
    store: Store, spec: Spec, entries: Sequence[Entry], seeds: Sequence[int], basis: Basis, rerun: bool = False,
    rerun_failed: Sequence[str] = (),
) -> list[Job]:
    """The jobs still to run on ``basis``, seed-major so every entry gets seed 0 first: those with no stored run,
    all of them with ``rerun``, and those whose stored run has a status in ``rerun_failed`` (``--rerun-failed``)."""
    jobs = []
    for seed in seeds:
        for e in entries:
            stored = None if rerun else store.get_run(e.key(spec, seed, basis))
            if stored is None or stored.result.status in rerun_failed:
                jobs.append(Job(e, seed))
    return jobs


ProgressFn = Callable[[int, Job, dict[str, Any]], None]  # (worker slot, job, event)
DoneFn = Callable[[int, Job, RunResult], None]
SkipFn = Callable[[list[Job], str], None]  # jobs left unstored because arena's machinery failed, and why


def execute(
    store: Store,
    spec: Spec,
    jobs: Sequence[Job],
    options: RunOptions,
    basis: Basis,
    *,
    checkpoint_dir: str | None = None,
    on_progress: ProgressFn | None = None,
    on_done: DoneFn | None = None,
    on_skip: SkipFn | None = None,
    rerun: bool = False,
    overlap_checks: bool | None = None,
) -> list[RunResult]:
    """Run the jobs on the engine of ``options`` (``engines``: worker processes here, or Ray actors), one slot
    thread per group in flight; record the results here, the one writer of the store.

    The jobs of one entry run together in one process (a fresh one per variant) and are then checked in a clean
    process (``runner.verify``) before they are recorded: an interrupted group leaves nothing half-checked in the
    store. Each group is claimed in the store before it trains (``schedule``): a run another live driver is
    training is waited for and its stored result used, never trained twice. With ``checkpoint_dir``, each ok run
    leaves its final weights there as ``<run key>.pt`` (on the node that trained it). When arena's own machinery
    fails (``MachineryFailure``: e.g. a full disk for checkpoints, a Ray slot whose actors kept dying) the entry's
    runs are not stored, never as the variant's crash: ``on_skip`` hears of them, the others go on, and the next
    command runs them again; a group whose machine was lost (``MachineLost``) trains again in another slot.

    With ``overlap_checks`` (default: on a GPU) a slot trains its next group while the last
    one is checked (a check takes ≈ 13 s of a pack's ≈ 40 s on an H200, on a GPU one pack leaves part idle); at
    most one check per slot is in flight, and a group is recorded, and its claim released, when its check ends.
    The results are the same either way: only the wall time changes."""
    groups = _groups(jobs)
    results: list[RunResult] = []
    errors: list[BaseException] = []
    if not groups:
        return results
    with open_engine(options) as engine, Schedule(store, spec, basis, groups) as schedule:
        slots = _Slots(store, spec, options, basis, checkpoint_dir, on_progress, on_done, on_skip, rerun, schedule,
                       engine, len(groups), results, errors,
                       overlaps_checks(options) if overlap_checks is None else overlap_checks)
        _run_slots(slots.work, slots.n_slots, slots.stop, errors)
    if errors:
        raise _one_line(errors[0])
    return results


@dataclass
class _Slots:
    """One ``execute``: what its slot threads share, and what each of them does."""

    store: Store
    spec: Spec
    options: RunOptions
    basis: Basis
    checkpoint_dir: str | None
    on_progress: ProgressFn | None
    on_done: DoneFn | None
    on_skip: SkipFn | None
    rerun: bool
    schedule: Schedule
    engine: Engine
    n_groups: int
    results: list[RunResult]
    errors: list[BaseException]
    defer: bool  # checks overlap the next group's training (``overlaps_checks``)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def n_slots(self) -> int:
        return max(1, min(self.engine.slots, self.n_groups))

    def skip(self, group: list[Job], exc: MachineryFailure) -> None:
        if self.on_skip:
            self.on_skip(group, str(exc))

    def requeue(self, group: list[Job], exc: MachineLost) -> None:
        if not self.schedule.requeue(group):
            self.skip(group, exc)

    def done_fn(self, slot: int) -> Callable[[Job, RunResult], None] | None:
        on_done = self.on_done
        return (lambda job, r: on_done(slot, job, r)) if on_done else None

    def work(self, slot: int) -> None:
        checks = _Checks(self.skip, self.errors, self.stop)
        # A slot goes on to another variant only when there are more groups than slots.
        with self.engine.slot(slot, self.n_slots, ahead=self.n_groups > self.n_slots) as run:
            try:
                while not self.stop.is_set():
                    handout = self.schedule.next(self.stop)
                    if handout is None:
                        return
                    _deliver(handout.stored, self.lock, self.results, self.done_fn(slot))
                    if not handout.train:
                        continue
                    try:
                        self.run_group(slot, run, handout.train, checks)
                    except MachineLost:
                        return  # the group went back to the schedule (run_group): another slot trains it
                    except MachineryFailure as exc:
                        self.skip(handout.train, exc)
            finally:
                # In the slot: its last check ends before its worker or actor is handed back or closed (and killed).
                checks.wait()

    def run_group(self, slot: int, run: Runner, group: list[Job], checks: _Checks) -> None:
        by_seed = {job.seed: job for job in group}
        on_progress = self.on_progress
        progress = (lambda seed, event: on_progress(slot, by_seed[seed], event)) if on_progress else None
        args = (self.spec, group, self.options, self.basis, self.checkpoint_dir)
        try:
            if self.defer:  # the result is a call to make later: the check, made while the next group trains
                complete = run(_train_in_worker, args, progress)
            else:
                done = run(_group_in_worker, args, progress)
                complete = lambda: done  # noqa: E731 (checked already, in the task)
        except MachineLost as exc:
            self.requeue(group, exc)
            self.schedule.release_jobs(group)
            raise
        except BaseException:
            self.schedule.release_jobs(group)
            raise

        def finish() -> None:
            try:
                pairs = complete()
                _record_all(self.store, [(by_seed[r.seed], r) for r in pairs], self.lock, self.results, self.rerun,
                            self.done_fn(slot))
            except MachineLost as exc:  # lost with its check's machine: trained again
                self.requeue(group, exc)
            finally:
                self.schedule.release_jobs(group)

        if self.defer:
            checks.start(finish, group)
        else:
            finish()


def overlaps_checks(options: RunOptions) -> bool:
    """Whether a slot trains its next group while the last one is checked: on a GPU, with either engine (a Ray
    slot's actor runs the check beside the next group); on a CPU the check would take its cores from the training."""
    from arena.runner.provenance import resolved_device

    return resolved_device(options) != "cpu"


class _Checks:
    """A slot's clean check in flight, on a thread of its own (at most one: ``start`` waits for the last)."""

    def __init__(self, skip: Callable[[list[Job], MachineryFailure], None], errors: list[BaseException],
                 stop: threading.Event) -> None:
        self.skip, self.errors, self.stop = skip, errors, stop
        self.thread: threading.Thread | None = None

    def start(self, finish: Callable[[], None], group: list[Job]) -> None:
        self.wait()

        def guarded() -> None:
            try:
                finish()
            except MachineryFailure as exc:  # arena's failure: the group is not stored, the others go on
                self.skip(group, exc)
            except BaseException as exc:  # as a slot's error: one line, and the other slots stop
                self.errors.append(exc)
                self.stop.set()

        self.thread = threading.Thread(target=guarded, daemon=True)
        self.thread.start()

    def wait(self) -> None:
        while self.thread is not None and self.thread.is_alive():
            self.thread.join(timeout=0.2)
        self.thread = None


def _group_in_worker(
    worker: Worker, spec: Spec, group: list[Job], options: RunOptions, basis: Basis, checkpoint_dir: str | None,
    on_event: Callable[[int, dict[str, Any]], Any] | None,
) -> list[RunResult]:
    """One group in ``worker`` (here or in a Ray actor): its results as they are to be recorded. Events go out as
    (seed, event), so a Ray slot sends no variant source with each of them."""
    return _train_in_worker(worker, spec, group, options, basis, checkpoint_dir, on_event)()


def _train_in_worker(
    worker: Worker, spec: Spec, group: list[Job], options: RunOptions, basis: Basis, checkpoint_dir: str | None,
    on_event: Callable[[int, dict[str, Any]], Any] | None,
) -> Complete:
    """``_group_in_worker`` with the check left to make: the local engine's, when checks overlap training."""
    progress = (lambda job, event: on_event(job.seed, event)) if on_event else None
    complete = _run_group(spec, worker, group, options, basis, checkpoint_dir, progress)
    return lambda: [r for _, r in complete()]


def _run_slots(work: Callable[[int], None], n_slots: int, stop: threading.Event, errors: list[BaseException]) -> None:
    """``work(slot)`` on one thread per slot until all return; the first error (an ArenaError such as bad data,
    a worker that cannot start) stops the others and lands in ``errors``; Ctrl-C stops them all."""

    def guarded(slot: int) -> None:
        try:
            work(slot)
        except BaseException as exc:  # one line, not a thread's traceback
            errors.append(exc)
            stop.set()

    pool = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(n_slots)]
    for t in pool:
        t.start()
    try:
        for t in pool:
            while t.is_alive():
                t.join(timeout=0.2)
    except KeyboardInterrupt:
        stop.set()
        raise


def _deliver(stored: list[tuple[Job, RunResult]], lock: threading.Lock, results: list[RunResult],
             on_done: Callable[[Job, RunResult], None] | None) -> None:
    """Runs another driver trained and recorded while this one waited: results like ours, trained once."""
    for job, result in stored:
        with lock:
            results.append(result)
        if on_done:
            on_done(job, result)


def _record_all(
    store: Store, done: list[tuple[Job, RunResult]], lock: threading.Lock, results: list[RunResult], rerun: bool,
    on_done: Callable[[Job, RunResult], None] | None,
) -> None:
    """Record a group's finished runs. A failed write (``record_run`` keeps that run in the spool) does not stop the
    others from being tried, so none is lost; the first failure is raised afterwards."""
    failed: ArenaError | None = None
    for job, result in done:
        try:
            with lock:
                store.record_run(result, replace=rerun)
                results.append(result)
        except ArenaError as exc:
            failed = failed or exc
            continue
        if on_done:
            on_done(job, result)
    if failed is not None:
        raise failed


def _one_line(exc: BaseException) -> BaseException:
    """An OSError of arena's own files (a full disk, a permission) as the one-line ArenaError the CLI prints."""
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return ArenaError(f"{where}{exc.strerror or exc}: arena could not write its own files; free some space (or "
                          "fix the permissions) and run the command again: finished runs are stored")
    return exc
