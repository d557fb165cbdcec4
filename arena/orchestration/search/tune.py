"""Hyperparameter search (Optuna) for one variant under one spec, and adoption of the best trial as an entry.

Contracts callers may rely on (docs/search.md explains the choices):

* One study per (variant name, spec), named and stored as ``arena.orchestration.search.storage`` says. Its user attrs
  record the
  variant sha256, the spec hash, the searched parameters and the tuning seed; resuming a study made for another
  variant version or other parameters is refused.
* Trials train with ``spec.tuning_seeds[0]`` (never a tournament seed) in the runner's isolated ``Worker``,
  ``options.execution.pack`` at a time as one packed model (each member its trial's hyperparameters; a search of
  anything but ``VALUE_PARAMS``, which may change shapes, trains one at a time). The
  variant's defaults are trial 0 of a new study (``baseline`` user attr). Intermediate val losses are reported
  and may prune. A diverged, crashed or timed-out run is a FAIL trial, never an exception; an ``ArenaError``
  (bad data, bad store) stops the search.
* ``trials`` is the budget of this call, global across ``workers`` processes and exact: a trial only starts
  while fewer than ``trials`` trials of this call have started (checked under a file lock).
* Every finished run is also an ordinary arena run record (``store.record_run(..., study_name, trial_number)``).
* With ``options.engine == "ray"`` the optimizers are threads of this process (so it stays the store's one writer)
  and each trial trains in a Ray slot of its own; the budget, the pruning and the storage are the same.
* Stale trials of dead workers are recovered (``arena.orchestration.search.storage.recover_stale_trials``) at the
  start of every call and worker.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import optuna

from arena.core.errors import ArenaError
from arena.core.hparams import VALUE_PARAMS
from arena.core.options import RunOptions
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant, VariantInfo
from arena.db.store import Store
from arena.orchestration.engines import open_engine
from arena.orchestration.search.optimize import Job, Reporter, TrialEvent, optimize, run_processes, run_threads
from arena.orchestration.search.space import DEFAULT_PARAMS, sampler_seed, search_space
from arena.orchestration.search.storage import (
    default_storage,
    open_storage,
    recover_stale_trials,
    storage_kind,
    study_name,
)
from arena.orchestration.search.study import TuneSummary, adopt, open_study, register_variant, summarize

__all__ = ["DEFAULT_PARAMS", "TrialEvent", "TuneSummary", "adopt", "summarize", "tune"]


def tune(
    loaded: LoadedVariant,
    spec: Spec,
    *,
    trials: int,
    store: Store | None,
    options: RunOptions | None = None,
    timeout_s: float | None = None,
    params: Sequence[str] = DEFAULT_PARAMS,
    resume: bool = False,
    storage: str | None = None,
    seed: int = 0,
    on_trial: Callable[[TrialEvent], None] | None = None,
    on_start: Callable[[str, str], None] | None = None,
) -> TuneSummary:
    """Search the variant's hyperparameters under ``spec``; see the module docstring for the contract.

    ``trials``: trials this call runs (global across ``options.workers`` processes); ``timeout_s``: no trial starts
    after this many seconds (a running one finishes); ``options.timeout_s``: one run's limit (past it the trial
    FAILs); each process has its own runner Worker (on GPUs round-robin over ``options.gpus`` when given).
    ``storage``: a storage spec (None: ``default_storage(store.url)``). ``on_trial`` is called in this process for
    each finished trial of this call, ``on_start(study_name, storage)`` once the study is open and checked.
    Raises ArenaError for bad input, an existing study without ``resume``, or a failure that would repeat for
    every trial (data, store, storage).
    """
    options = options or RunOptions()
    if trials < 1:
        raise ArenaError(f"--trials must be at least 1, got {trials}")
    if timeout_s is not None and timeout_s <= 0:
        raise ArenaError(f"--timeout must be positive seconds, got {timeout_s}")
    space = search_space(loaded, params)
    if options.execution.pack > 1 and not set(space) <= set(VALUE_PARAMS):  # a shape may differ: one at a time
        options = replace(options, execution=replace(options.execution, pack=1))
    spec_string = storage or default_storage(store.url if store is not None else "sqlite://")
    if options.workers > 1 and storage_kind(spec_string) == "rdb" and spec_string.lower().startswith("sqlite"):
        raise ArenaError(
            f"--storage {spec_string}: SQLite supports one optimizing process (Optuna FAQ); use --workers 1, a "
            "journal file (the default) or PostgreSQL"
        )
    t0 = time.monotonic()
    name = study_name(loaded.name, spec)
    study = open_study(open_storage(spec_string), name, resume, loaded, spec, list(space), spec_string)
    if store is not None:
        register_variant(store, spec, loaded)
    baseline = {k: float(h.default) for k, h in space.items()}
    study.enqueue_trial(baseline, user_attrs={"baseline": True}, skip_if_exists=True)  # parent only: no race
    recover_stale_trials(study)
    if on_start is not None:
        on_start(name, spec_string)
    call_id = uuid.uuid4().hex[:12]
    with open_engine(options) as engine:  # Ray: joined (or started) once for the whole call
        n = engine.slots  # optimizers: --workers processes here; with Ray, what the cluster runs at once
        lock_path = str(Path(tempfile.gettempdir()) / f"arena-tune-{call_id}.lock") if n > 1 else None
        template = Job(
            storage=spec_string, study=name, call_id=call_id, budget=trials,
            deadline=time.time() + timeout_s if timeout_s else None, variant_source=loaded.source,
            variant_path=loaded.path, variant_sha=loaded.sha256, variant_info=_info(loaded).to_dict(),
            spec=spec.to_dict(), params=tuple(space), sampler_seed=0, lock_path=lock_path,
            store_url=store.url if store is not None else None, options=options,
            verbosity=optuna.logging.get_verbosity(),
        )
        jobs = _per_process(template, replace(options, workers=n), seed, len(study.trials))
        reporter = Reporter(study, call_id, trials, on_trial)
        try:
            if options.engine == "ray":
                run_threads(jobs, study, reporter, store, engine)
            elif len(jobs) == 1:
                optimize(jobs[0], store, lambda: False, reporter.poll)
            else:
                run_processes(jobs, study, reporter)
        finally:
            if lock_path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
    reporter.poll()
    return summarize(study, spec_string, ran=len(reporter.seen), seconds=time.monotonic() - t0)


def _info(loaded: LoadedVariant) -> VariantInfo:
    v = loaded.variant
    return v if isinstance(v, VariantInfo) else VariantInfo.of(v)


def _per_process(template: Job, options: RunOptions, seed: int, n_existing: int) -> list[Job]:
    """One job per optimizing process: its own sampler seed (equal seeds would replay the same start-up points),
    a share of the CPU threads, and its GPU round-robin."""
    n = options.workers
    cpus = os.cpu_count() or 1
    gpus = options.gpus
    return [
        replace(
            template, sampler_seed=sampler_seed(seed, n_existing, i),
            threads=max(1, cpus // n) if n > 1 else None, concurrency=n * options.execution.pack,
            env={"CUDA_VISIBLE_DEVICES": str(gpus[i % len(gpus)])} if gpus else {},
        )
        for i in range(n)
    ]
