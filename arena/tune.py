"""Hyperparameter search (Optuna) for one variant under one spec, and adoption of the best trial as an entry.

Contracts callers may rely on (docs/search.md explains the choices):

* One study per (variant name, spec), named and stored as ``arena.study_storage`` says. Its user attrs record the
  variant sha256, the spec hash, the searched parameters and the tuning seed; resuming a study made for another
  variant version or other parameters is refused.
* Trials train with ``spec.tuning_seeds[0]`` (never a tournament seed) in the runner's isolated ``Worker``. The
  variant's defaults are trial 0 of a new study (``baseline`` user attr). Intermediate val losses are reported
  and may prune. A diverged, crashed or timed-out run is a FAIL trial, never an exception; an ``ArenaError``
  (bad data, bad store) stops the search.
* ``trials`` is the budget of this call, global across ``workers`` processes and exact: a trial only starts
  while fewer than ``trials`` trials of this call have started (checked under a file lock).
* Every finished run is also an ordinary arena run record (``store.record_run(..., study_name, trial_number)``).
* Stale trials of dead workers are recovered (``arena.study_storage.recover_stale_trials``) at the start of every
  call and worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import multiprocessing as mp
import os
import queue
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.exceptions import DuplicatedStudyError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from arena.api import HParam
from arena.config import did_you_mean
from arena.errors import ArenaError
from arena.runner.result import RunResult
from arena.runner.spec import Spec
from arena.runner.train import resolve_hparams
from arena.runner.worker import Worker, make_task
from arena.study_storage import (
    default_storage,
    open_storage,
    recover_stale_trials,
    storage_kind,
    study_name,
    worker_owner,
)
from arena.variants_loader import LoadedVariant, load_source

if TYPE_CHECKING:
    from arena.db.store import Store

DEFAULT_PARAMS: tuple[str, ...] = ("gate_init", "lr_mult")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STARTED = (TrialState.RUNNING, *FINISHED)


class TrialFailed(Exception):
    """The run behind a trial failed (diverged, crashed, timeout): Optuna records FAIL and the search goes on."""


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
class TuneSummary:
    """What a search left behind. ``n_trials`` counts the whole study by state name; ``ran`` this call only."""

    study_name: str
    storage: str
    n_trials: dict[str, int]
    ran: int
    best_value: float | None
    best_params: dict[str, float]
    best_trial: int | None
    baseline_value: float | None
    dashboard_hint: str
    seconds: float = 0.0


# -- search space and pruner ------------------------------------------------------------------------------------
def search_space(loaded: LoadedVariant, params: Sequence[str] = DEFAULT_PARAMS) -> dict[str, HParam]:
    """The requested hyperparameters the variant declares (the default names it lacks are skipped; any other
    undeclared name is an error). ArenaError if nothing is left to search."""
    declared = loaded.variant.hparams
    space: dict[str, HParam] = {}
    for name in params:
        if name in declared:
            space[name] = declared[name]
        elif name not in DEFAULT_PARAMS:
            raise ArenaError(
                f"--params: {loaded.name} has no hyperparameter '{name}'{did_you_mean(name, declared)}; "
                f"it declares: {', '.join(declared) or 'none'}"
            )
    if not space:
        raise ArenaError(
            f"{loaded.name} declares none of the hyperparameters to search ({', '.join(params)}); "
            f"it declares: {', '.join(declared) or 'none'}"
        )
    return space


def make_pruner(spec: Spec) -> optuna.pruners.BasePruner:
    """Median pruning that spares slow starters: nothing is pruned before 5 trials completed, before half of the
    training steps, or against fewer than 3 other trials at that step."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=spec.steps // 2, n_min_trials=3)


def make_sampler(seed: int) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed)


def _sampler_seed(seed: int, n_existing: int, index: int) -> int:
    """Workers (and resumed calls) get distinct seeds: equal seeds would replay the same random start-up points."""
    return int(hashlib.sha256(f"{seed}|{n_existing}|{index}".encode()).hexdigest()[:8], 16)


# -- one optimizing process -------------------------------------------------------------------------------------
@dataclass
class _Job:
    """What an optimizing process needs (plain data: it crosses the spawn boundary)."""

    storage: str
    study: str
    call_id: str
    budget: int
    deadline: float | None  # time.time() after which no trial starts
    variant_source: str
    variant_path: str
    spec: dict[str, Any]
    params: tuple[str, ...]
    sampler_seed: int
    trial_timeout_s: float | None
    lock_path: str | None
    store_url: str | None = None
    device: str = "auto"
    backend: str = "auto"
    data_flag: str | None = None
    threads: int | None = None
    env: dict[str, str] = field(default_factory=dict)
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


def _optimize(job: _Job, store: Store | None, stop: Callable[[], bool], after_trial: Callable[[], None]) -> None:
    """Run trials of ``job.study`` until the call's budget is used, the deadline passes or ``stop()``."""
    storage = open_storage(job.storage)
    spec = Spec.from_dict(job.spec)
    loaded = load_source(job.variant_source, job.variant_path)
    space = search_space(loaded, job.params)
    study = optuna.load_study(
        study_name=job.study, storage=storage, sampler=make_sampler(job.sampler_seed), pruner=make_pruner(spec)
    )
    recover_stale_trials(study)
    owner = worker_owner()
    seed = spec.tuning_seeds[0]
    lock = _BudgetLock(job.lock_path)
    with Worker(threads=job.threads, env=job.env) as worker:

        def objective(trial: optuna.Trial) -> float:
            trial.set_user_attr("call", job.call_id)
            for key, value in owner.items():
                trial.set_user_attr(key, value)
            lock.release()  # the trial now counts against the budget: let the other workers look
            trial.set_user_attr("seed", seed)
            trial.set_user_attr("sampler_seed", job.sampler_seed)
            hp = {name: trial.suggest_float(name, h.low, h.high, log=h.log) for name, h in space.items()}

            def on_event(event: dict[str, Any]) -> bool:
                if event.get("type") != "eval" or not math.isfinite(float(event["val_loss"])):
                    return False
                trial.report(float(event["val_loss"]), int(event["step"]))
                return trial.should_prune()

            task = make_task(spec, loaded, seed, hp, device=job.device, backend=job.backend, data_flag=job.data_flag)
            result = worker.run(task, job.trial_timeout_s, on_event)
            if store is not None:
                store.record_run(result, study_name=job.study, trial_number=trial.number)
            trial.set_user_attr("run_key", result.key)
            trial.set_user_attr("status", result.status)
            return _value(trial, result)

        while not stop():
            if job.deadline is not None and time.time() >= job.deadline:
                return
            lock.acquire()
            try:
                if _started(study, job.call_id) >= job.budget:
                    return
                study.optimize(objective, n_trials=1, catch=(TrialFailed,))
            finally:
                lock.release()
            after_trial()


def _value(trial: optuna.Trial, result: RunResult) -> float:
    if result.status == "pruned":
        raise optuna.TrialPruned(f"pruned at step {result.steps_done}")
    loss = result.final_val_loss
    if result.status != "ok" or loss is None or not math.isfinite(loss):
        reason = f"{result.status}: {_first_line(result.error) or 'no final val loss'}"[:500]
        trial.set_user_attr("error", reason)
        raise TrialFailed(reason)
    return float(loss)


def _worker_main(job: _Job, stop: Any, errors: Any) -> None:
    """Entry point of an optimizing process (spawned): its own storage handle, Store and runner Worker."""
    optuna.logging.set_verbosity(job.verbosity)
    store: Store | None = None
    try:
        if job.store_url is not None:
            from arena.db.store import Store

            store = Store(job.store_url)
        _optimize(job, store, stop.is_set, lambda: None)
    except KeyboardInterrupt:
        pass
    except ArenaError as exc:
        errors.put(str(exc))
    except Exception as exc:
        errors.put(f"{type(exc).__name__}: {exc}")
    finally:
        if store is not None:
            store.close()


# -- the search -------------------------------------------------------------------------------------------------
def _open_study(
    storage: BaseStorage, name: str, resume: bool, loaded: LoadedVariant, spec: Spec, params: list[str], where: str
) -> optuna.Study:
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
        attrs: dict[str, Any] = {
            "variant": loaded.name,
            "variant_sha": loaded.sha256,
            "spec_hash": spec.hash,
            "spec": spec.label,
            "params": params,
            "tuning_seed": spec.tuning_seeds[0],
            "objective": "final val loss (nats/token, full final eval) at the tuning seed",
        }
        for key, value in attrs.items():
            study.set_user_attr(key, value)
        return study
    except DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
    if not resume:
        raise ArenaError(
            f"study '{name}' already exists in {where} ({len(study.trials)} trials); pass --resume to continue it"
        )
    _check_study(study, loaded, where)
    if study.user_attrs.get("params") not in (None, params):
        raise ArenaError(
            f"study '{name}' searches {', '.join(study.user_attrs['params'])}, not {', '.join(params)}; "
            f"resume with --params {','.join(study.user_attrs['params'])} or use another --storage"
        )
    return study


def _check_study(study: optuna.Study, loaded: LoadedVariant, where: str) -> None:
    sha = study.user_attrs.get("variant_sha")
    if sha is not None and sha != loaded.sha256:
        raise ArenaError(
            f"study '{study.study_name}' in {where} was made for another version of {loaded.name} "
            f"(sha {sha[:12]}, this file is {loaded.sha256[:12]}); delete it "
            f"(optuna delete-study --study-name '{study.study_name}' --storage …) or use another --storage"
        )


def _register(store: Store, spec: Spec, loaded: LoadedVariant) -> None:
    v = loaded.variant
    store.add_spec(spec)
    store.add_variant(v.name, v.kind, v.summary, loaded.source, loaded.sha256, loaded.path)


def _best(study: optuna.Study) -> FrozenTrial | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return min(done, key=lambda t: (t.value, t.number)) if done else None


class _Reporter:
    """Turns this call's newly finished trials into TrialEvents, in finishing order."""

    def __init__(self, study: optuna.Study, call_id: str, budget: int, on_trial: Callable[[TrialEvent], None] | None):
        self.study, self.call_id, self.budget, self.on_trial = study, call_id, budget, on_trial
        self.seen: set[int] = set()

    def poll(self) -> None:
        trials = self.study.get_trials(deepcopy=False, states=FINISHED)
        new = [t for t in trials if _ours(t, self.call_id) and t.number not in self.seen]
        if not new:
            return
        best = _best(self.study)
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


def tune(
    loaded: LoadedVariant,
    spec: Spec,
    *,
    trials: int,
    timeout_s: float | None = None,
    workers: int = 1,
    params: Sequence[str] = DEFAULT_PARAMS,
    resume: bool = False,
    storage: str | None = None,
    store: Store | None,
    seed: int = 0,
    on_trial: Callable[[TrialEvent], None] | None = None,
    on_start: Callable[[str, str], None] | None = None,
    trial_timeout_s: float | None = 3600.0,
    device: str = "auto",
    backend: str = "auto",
    data_flag: str | None = None,
    gpus: Sequence[int] = (),
) -> TuneSummary:
    """Search the variant's hyperparameters under ``spec``; see the module docstring for the contract.

    ``trials``: trials this call runs (global across ``workers``); ``timeout_s``: no trial starts after this many
    seconds (a running one finishes); ``trial_timeout_s``: one run's limit (past it the trial FAILs). ``storage``:
    a storage spec (None: ``default_storage(store.url)``). ``workers`` > 1 runs that many processes, each with
    its own runner Worker (on GPUs round-robin over ``gpus`` when given). ``on_trial`` is called in this process
    for each finished trial of this call, ``on_start(study_name, storage)`` once the study is open and checked.
    Raises ArenaError for bad input, an existing study without ``resume``,
    or a failure that would repeat for every trial (data, store, storage).
    """
    if trials < 1:
        raise ArenaError(f"--trials must be at least 1, got {trials}")
    if workers < 1:
        raise ArenaError(f"--workers must be at least 1, got {workers}")
    if timeout_s is not None and timeout_s <= 0:
        raise ArenaError(f"--timeout must be positive seconds, got {timeout_s}")
    space = search_space(loaded, params)
    spec_string = storage or default_storage(store.url if store is not None else "sqlite://")
    if workers > 1 and storage_kind(spec_string) == "rdb" and spec_string.lower().startswith("sqlite"):
        raise ArenaError(
            f"--storage {spec_string}: SQLite supports one optimizing process (Optuna FAQ); use --workers 1, a "
            "journal file (the default) or PostgreSQL"
        )
    t0 = time.monotonic()
    optuna_storage = open_storage(spec_string)
    name = study_name(loaded.name, spec)
    study = _open_study(optuna_storage, name, resume, loaded, spec, list(space), spec_string)
    if store is not None:
        _register(store, spec, loaded)
    baseline = {k: float(h.default) for k, h in space.items()}
    study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)  # parent only: no race
    recover_stale_trials(study)
    if on_start is not None:
        on_start(name, spec_string)
    call_id = uuid.uuid4().hex[:12]
    n_existing = len(study.trials)
    deadline = time.time() + timeout_s if timeout_s else None
    lock_path = str(Path(tempfile.gettempdir()) / f"arena-tune-{call_id}.lock") if workers > 1 else None
    cpus = os.cpu_count() or 1
    jobs = [
        _Job(
            storage=spec_string,
            study=name,
            call_id=call_id,
            budget=trials,
            deadline=deadline,
            variant_source=loaded.source,
            variant_path=loaded.path,
            spec=spec.to_dict(),
            params=tuple(space),
            sampler_seed=_sampler_seed(seed, n_existing, i),
            trial_timeout_s=trial_timeout_s,
            lock_path=lock_path,
            store_url=store.url if store is not None else None,
            device=device,
            backend=backend,
            data_flag=data_flag,
            threads=max(1, cpus // workers) if workers > 1 else None,
            env={"CUDA_VISIBLE_DEVICES": str(gpus[i % len(gpus)])} if gpus else {},
            verbosity=optuna.logging.get_verbosity(),
        )
        for i in range(workers)
    ]
    reporter = _Reporter(study, call_id, trials, on_trial)
    try:
        if workers == 1:
            _optimize(jobs[0], store, lambda: False, reporter.poll)
        else:
            _run_processes(jobs, study, reporter)
    finally:
        if lock_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(lock_path)
    reporter.poll()
    return summarize(study, spec_string, ran=len(reporter.seen), seconds=time.monotonic() - t0)


def _run_processes(jobs: list[_Job], study: optuna.Study, reporter: _Reporter) -> None:
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


def summarize(study: optuna.Study, storage: str, ran: int = 0, seconds: float = 0.0) -> TuneSummary:
    """The summary of a study as it stands (``ran``/``seconds`` describe the call that asks)."""
    trials = study.get_trials(deepcopy=False)
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    best = _best(study)
    baselines = [t for t in trials if t.user_attrs.get("baseline") and t.state == TrialState.COMPLETE]
    return TuneSummary(
        study_name=study.study_name,
        storage=storage,
        n_trials=counts,
        ran=ran,
        best_value=best.value if best else None,
        best_params=dict(best.params) if best else {},
        best_trial=best.number if best else None,
        baseline_value=baselines[0].value if baselines else None,
        dashboard_hint=dashboard_hint(storage),
        seconds=seconds,
    )


def dashboard_hint(storage: str) -> str:
    return f"arena dashboard --storage '{storage}'   (or: optuna-dashboard '{storage}')"


# -- adoption ---------------------------------------------------------------------------------------------------
def load_tuned_study(loaded: LoadedVariant, spec: Spec, storage: str) -> optuna.Study:
    """The existing study of (variant, spec) in ``storage``; ArenaError naming ``arena tune`` if there is none."""
    name = study_name(loaded.name, spec)
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
    except KeyError:
        raise ArenaError(f"no study '{name}' in {storage}; run: arena tune {loaded.name} --trials N") from None
    _check_study(study, loaded, storage)
    return study


def adopt(
    loaded: LoadedVariant, spec: Spec, store: Store, storage: str | None = None, *, name: str | None = None
) -> str:
    """Freeze the study's best COMPLETE trial as the entry ``<variant>@tuned`` (or ``name``): the variant version
    with the trial's params over its defaults, ``origin="tuned"``. Returns the entry name. Adopting the same
    trial again is a no-op; an existing entry with other content raises ArenaError (entries are frozen)."""
    storage = storage or default_storage(store.url)
    study = load_tuned_study(loaded, spec, storage)
    best = _best(study)
    if best is None:
        raise ArenaError(f"study '{study.study_name}' has no completed trial to adopt; run more trials")
    hparams = resolve_hparams(loaded, {k: float(v) for k, v in best.params.items()})
    entry = name or f"{loaded.name}@tuned"
    _register(store, spec, loaded)
    store.add_entry(entry, loaded.sha256, hparams, origin="tuned", study_name=study.study_name)
    study.set_user_attr("adopted", {"entry": entry, "trial": best.number})
    return entry
