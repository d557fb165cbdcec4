"""The optimizing processes of one search call: each runs trials in its own runner ``Worker`` until the call's
global budget is used (counted under a file lock, so the budget is exact across processes)."""

from __future__ import annotations

import contextlib
import fcntl
import math
import multiprocessing as mp
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant, VariantInfo
from arena.db.store import Store
from arena.orchestration.engines import Engine, Runner, local_slot
from arena.orchestration.search.space import make_pruner, make_sampler, search_space
from arena.orchestration.search.storage import heartbeats, open_storage, recover_stale_trials, worker_owner
from arena.orchestration.search.study import best_trial
from arena.runner.trials import run_members
from arena.runner.worker import Worker

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STARTED = (TrialState.RUNNING, *FINISHED)


@dataclass(frozen=True)
class TrialEvent:
    """A finished trial of this call, as ``on_trial`` receives it (in the calling process)."""

    number: int
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None
    params: dict[str, float]
    done: int  # trials of this call finished so far (this one included)
    budget: int
    best_value: float | None  # the study's best so far (all calls)
    best_trial: int | None
    error: str | None = None


@dataclass(frozen=True)
class Job:
    """What an optimizing process needs (plain data: it crosses the spawn boundary)."""

    storage: str
    study: str
    call_id: str
    budget: int
    deadline: float | None  # time.time() after which no trial starts
    variant_source: str
    variant_path: str
    variant_sha: str
    variant_info: dict[str, Any]
    spec: dict[str, Any]
    params: tuple[str, ...]
    sampler_seed: int
    lock_path: str | None
    store_url: str | None = None
    options: RunOptions = field(default_factory=RunOptions)
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    concurrency: int = 1  # trials of this call in flight at once (optimizers × pack): how adaptive the search is
    verbosity: int = optuna.logging.WARNING


class _BudgetLock:
    """An exclusive flock held from 'count the started trials' until the new trial carries this call's id. The
    kernel drops it if the holder dies, so a killed worker never blocks the others."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        if self.path is not None and self._fd is None:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _ours(t: FrozenTrial, call_id: str) -> bool:
    return t.user_attrs.get("call") == call_id and not t.user_attrs.get("swept")


def _started(study: optuna.Study, call_id: str) -> int:
    return sum(_ours(t, call_id) for t in study.get_trials(deepcopy=False, states=STARTED))


def _first_line(text: str | None) -> str:
    return next((ln.strip() for ln in (text or "").splitlines() if ln.strip()), "")


def optimize(job: Job, store: Store | None, stop: Callable[[], bool], after_trial: Callable[[], None],
             engine: Engine | None = None) -> None:
    """Run trials of ``job.study`` until the call's budget is used, the deadline passes or ``stop()``; each trial
    trains in this optimizer's runner Worker, or (``engine``: Ray) as a task of the cluster."""
    storage = open_storage(job.storage)
    spec = Spec.from_dict(job.spec)
    # The declaration as plain data: variant code runs only in the runner Worker's child, not here (we write).
    loaded = LoadedVariant(VariantInfo.from_dict(job.variant_info), job.variant_path, job.variant_source,
                           job.variant_sha)
    space = search_space(loaded, job.params)
    study = optuna.load_study(
        study_name=job.study, storage=storage, sampler=make_sampler(job.sampler_seed), pruner=make_pruner(spec)
    )
    recover_stale_trials(study)
    owner = worker_owner()
    seed = spec.tuning_seeds[0]
    lock = _BudgetLock(job.lock_path)
    pack = job.options.execution.pack  # trials trained together as one model (all of the tuning seed)
    # One variant a study: the worker never goes on to another, so no standby is started for one.
    with engine.slot(0, 1, ahead=False) if engine is not None else local_slot(job.threads, job.env,
                                                                                standby=False) as run:
        while not stop():
            if job.deadline is not None and time.time() >= job.deadline:
                return
            lock.acquire()
            try:
                started = _started(study, job.call_id)
                if started >= job.budget:
                    return
                # Asked under the lock and marked as this call's before it is let go: the budget stays exact.
                trials = [study.ask() for _ in range(min(pack, job.budget - started))]
                for trial in trials:
                    trial.set_user_attr("call", job.call_id)
                    for key, value in owner.items():  # whose it is: a sweep fails it if this process dies
                        trial.set_user_attr(key, value)
            finally:
                lock.release()
            with heartbeats(study, trials):
                _run_trials(trials, study, run, store, job, spec, loaded, space, seed)
            after_trial()


def _run_trials(trials: list[optuna.Trial], study: optuna.Study, run: Runner, store: Store | None, job: Job,
                spec: Spec, loaded: LoadedVariant, space: dict[str, Any], seed: int) -> None:
    """Train ``trials`` (one pack: each member its trial's hyperparameters, all on the tuning seed; pruning is per
    member) and tell the study each one's outcome. Whatever stops this midway fails the trials left (as Optuna's
    own ``optimize`` does), and is raised."""
    told: set[int] = set()
    try:
        hps = []
        for trial in trials:
            trial.set_user_attr("seed", seed)
            trial.set_user_attr("sampler_seed", job.sampler_seed)
            trial.set_user_attr("pack", job.options.execution.pack)  # its execution: trials trained together
            trial.set_user_attr("concurrency", job.concurrency)  # the search's shape: part of its tuned league
            hps.append({name: trial.suggest_float(name, h.low, h.high, log=h.log) for name, h in space.items()})

        def on_event(i: int, event: dict[str, Any]) -> bool:
            if event.get("type") != "eval" or not math.isfinite(float(event["val_loss"])):
                return False
            trials[i].report(float(event["val_loss"]), int(event["step"]))
            return trials[i].should_prune()

        # Trained in the worker's process, then checked in a clean one, like every run that is recorded.
        results = run(_train_trials, (spec, loaded, seed, hps, job.options), on_event)
        for trial, result in zip(trials, results, strict=True):
            if store is not None:
                store.record_run(result, study_name=job.study, trial_number=trial.number)
            trial.set_user_attr("run_key", result.key)
            trial.set_user_attr("status", result.status)
            state, value = _outcome(trial, result)
            study.tell(trial, value, state=state)
            told.add(trial.number)
    except BaseException:
        for trial in trials:
            if trial.number not in told:
                with contextlib.suppress(Exception):
                    study.tell(trial, state=TrialState.FAIL)
        raise


def _train_trials(worker: Worker, spec: Spec, loaded: LoadedVariant, seed: int, hps: list[dict[str, float]],
                  options: RunOptions, on_event: Callable[[int, dict[str, Any]], bool] | None) -> list[RunResult]:
    """One pack of trials in ``worker`` (here, or in a Ray slot), checked in a clean process."""
    return run_members(worker, spec, loaded, [(seed, hp) for hp in hps], options, on_event=on_event)


def _outcome(trial: optuna.Trial, result: RunResult) -> tuple[TrialState, float | None]:
    """What the study is told of a trial's run: COMPLETE with its final val loss, PRUNED, or FAIL (the reason in
    the trial's ``error`` attr)."""
    if result.status == "pruned":
        return TrialState.PRUNED, None
    loss = result.final_val_loss
    if result.status != "ok" or loss is None or not math.isfinite(loss):
        reason = f"{result.status}: {_first_line(result.error) or 'no final val loss'}"[:500]
        trial.set_user_attr("error", reason)
        return TrialState.FAIL, None
    return TrialState.COMPLETE, float(loss)


def _worker_main(job: Job, stop: Any, errors: Any) -> None:
    """Entry point of an optimizing process (spawned): its own storage handle, Store and runner Worker."""
    optuna.logging.set_verbosity(job.verbosity)
    store: Store | None = None
    try:
        if job.store_url is not None:
            from arena.db.store import Store

            store = Store(job.store_url)
        optimize(job, store, stop.is_set, lambda: None)
    except KeyboardInterrupt:
        pass
    except ArenaError as exc:
        errors.put(str(exc))
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
    finally:
        if store is not None:
            store.close()


class Reporter:
    """Turns this call's newly finished trials into TrialEvents, in finishing order."""

    def __init__(self, study: optuna.Study, call_id: str, budget: int, on_trial: Callable[[TrialEvent], None] | None):
        self.study, self.call_id, self.budget, self.on_trial = study, call_id, budget, on_trial
        self.seen: set[int] = set()

    def poll(self) -> None:
        trials = self.study.get_trials(deepcopy=False, states=FINISHED)
        new = [t for t in trials if _ours(t, self.call_id) and t.number not in self.seen]
        if not new:
            return
        best = best_trial(self.study)
        for t in sorted(new, key=lambda t: (t.datetime_complete or t.datetime_start, t.number)):
            self.seen.add(t.number)
            if self.on_trial is not None:
                self.on_trial(
                    TrialEvent(
                        number=t.number,
                        state=t.state.name,
                        value=t.value,
                        params=dict(t.params),
                        done=len(self.seen),
                        budget=self.budget,
                        best_value=best.value if best else None,
                        best_trial=best.number if best else None,
                        error=t.user_attrs.get("error"),
                    )
                )


def run_threads(jobs: list[Job], study: optuna.Study, reporter: Reporter, store: Store | None, engine: Engine) -> None:
    """The optimizers of a search on Ray: one thread each here (this process writes the store), each trial a task
    of ``engine``; the global budget is counted under the same lock as across processes."""
    stop = threading.Event()
    messages: list[str] = []

    def one(job: Job) -> None:
        try:
            optimize(job, store, stop.is_set, lambda: None, engine)
        except ArenaError as exc:
            messages.append(str(exc))
        except Exception as exc:
            messages.append(f"{type(exc).__name__}: {exc}")
        if messages:
            stop.set()

    threads = [threading.Thread(target=one, args=(job,), name=f"arena-tune-{i}", daemon=True)
               for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.25 / len(threads))
            reporter.poll()
    except BaseException:
        stop.set()
        raise
    if messages:
        raise ArenaError(messages[0])


def run_processes(jobs: list[Job], study: optuna.Study, reporter: Reporter) -> None:
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    errors = ctx.Queue()
    # Not daemonic: each process starts its own runner child, and daemonic processes may not have children.
    procs = [
        ctx.Process(target=_worker_main, args=(job, stop, errors), name=f"arena-tune-{i}") for i, job in enumerate(jobs)
    ]
    messages: list[str] = []
    try:
        for p in procs:
            p.start()
        reaped: set[int] = set()
        while any(p.is_alive() for p in procs):
            for p in procs:
                p.join(timeout=0.25 / len(procs))
            reporter.poll()
            with contextlib.suppress(queue.Empty):
                while True:
                    messages.append(errors.get_nowait())
            if messages:
                stop.set()
            for i, p in enumerate(procs):
                if not p.is_alive() and i not in reaped:
                    reaped.add(i)
                    if p.exitcode:  # killed mid-trial: fail its trial and re-queue the params for the others
                        recover_stale_trials(study)
    except BaseException:
        stop.set()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        raise
    with contextlib.suppress(queue.Empty):
        while True:
            messages.append(errors.get_nowait())
    if messages:
        raise ArenaError(messages[0])
