"""One variant's seeds trained in a worker (in packs when the execution packs them), then checked in a clean process:
the results as they are to be recorded. The worker (``runner.worker``) runs one task; this is the sequence."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.core.variant import LoadedVariant
from arena.runner.standby import Standby, gpu_warm
from arena.runner.worker import EventFn, Worker, make_task


def packs(seeds: Sequence[int], size: int) -> list[list[int]]:
    """``seeds`` in order, in packs of ``size`` (the last one may be short: the worker fills it)."""
    return [list(seeds[i : i + size]) for i in range(0, len(seeds), size)]


Member = tuple[int, Mapping[str, float] | None]  # (seed, hyperparameters; None: the variant's defaults)


def run_checked(
    worker: Worker, spec: Spec, loaded: LoadedVariant, seeds: Sequence[int], hparams: Mapping[str, float] | None,
    options: RunOptions, *, on_event: Callable[[int, dict[str, Any]], Any] | None = None,
    checkpoint_paths: Mapping[int, str] | None = None, policy: bool = True, basis: Basis | None = None,
) -> list[RunResult]:
    """Train one variant on ``seeds`` in ``worker`` (one process for the variant; ``options.execution.pack`` seeds
    at a time, as one packed model), then check every ok run in a clean process (``runner.verify``): the results
    as they are to be recorded, keyed on ``basis`` (default: the basis the worker reports for ``options``).
    ``on_event(seed, event)``."""
    return train_seeds(worker, spec, loaded, seeds, hparams, options, on_event=on_event,
                       checkpoint_paths=checkpoint_paths, policy=policy, basis=basis).finish()


def train_seeds(
    worker: Worker, spec: Spec, loaded: LoadedVariant, seeds: Sequence[int], hparams: Mapping[str, float] | None,
    options: RunOptions, *, on_event: Callable[[int, dict[str, Any]], Any] | None = None,
    checkpoint_paths: Mapping[int, str] | None = None, policy: bool = True, basis: Basis | None = None,
) -> PendingCheck:
    """The training half of ``run_checked``: the seeds trained, their check still to come (``PendingCheck``)."""
    paths = [(checkpoint_paths or {}).get(seed) for seed in seeds]
    return train_members(worker, spec, loaded, [(seed, hparams) for seed in seeds], options,
                         on_event=(lambda i, event: on_event(seeds[i], event)) if on_event else None,
                         checkpoint_paths=paths, policy=policy, basis=basis)


def run_members(
    worker: Worker, spec: Spec, loaded: LoadedVariant, members: Sequence[Member], options: RunOptions, *,
    on_event: Callable[[int, dict[str, Any]], Any] | None = None,
    checkpoint_paths: Sequence[str | None] | None = None, policy: bool = True, basis: Basis | None = None,
) -> list[RunResult]:
    """``run_checked`` for members that each bring their own hyperparameters (a packed search: K trials of the
    tuning seed as one model, ``options.execution.pack`` at a time): one result per member, in order, checked.
    ``on_event(i, event)`` names the member by its index in ``members``."""
    return train_members(worker, spec, loaded, members, options, on_event=on_event,
                         checkpoint_paths=checkpoint_paths, policy=policy, basis=basis).finish()


class PendingCheck:
    """Trained results waiting for their clean-process check (``runner.verify``): ``finish()`` checks them (once)
    and returns them as they are to be recorded; ``cancel()`` drops them. Until one of the two, it holds the
    trained weights (a temporary folder) and the check's process started ahead. The worker is free meanwhile: a
    caller may train the next group while this one is checked (``arena.orchestration.execute`` does)."""

    def __init__(self, spec: Spec, loaded: LoadedVariant, results: list[RunResult], states: list[str],
                 folder: tempfile.TemporaryDirectory[str], options: RunOptions, policy: bool,
                 checker: Standby | None) -> None:
        self.spec, self.loaded, self.results, self.states = spec, loaded, results, states
        self.folder, self.options, self.policy, self.checker = folder, options, policy, checker

    def finish(self) -> list[RunResult]:
        from arena.runner.verify import verify

        try:
            t0 = time.perf_counter()
            checked = verify(self.spec, self.loaded.source, self.loaded.path, self.results, self.states,
                             self.options, policy=self.policy, standby=self.checker)
            for r in checked:  # one clean process checks the whole group: its time, on each of the group's runs
                r.env.setdefault("timing", {})["check_s"] = time.perf_counter() - t0
            return checked
        finally:
            self.cancel()

    def cancel(self) -> None:
        if self.checker is not None:
            self.checker.kill()  # handed over by then, or not needed: an interruption, arena's own failure
            self.checker = None
        self.folder.cleanup()


def train_members(
    worker: Worker, spec: Spec, loaded: LoadedVariant, members: Sequence[Member], options: RunOptions, *,
    on_event: Callable[[int, dict[str, Any]], Any] | None = None,
    checkpoint_paths: Sequence[str | None] | None = None, policy: bool = True, basis: Basis | None = None,
) -> PendingCheck:
    """The training half of ``run_members``: the members trained in ``worker``, their check still to come."""
    from arena.runner.provenance import basis_for, resolved_device

    # On a GPU the clean-check process starts now and sets up while the seeds train (``runner.standby``).
    checker = Standby(gpu_warm()) if resolved_device(options) != "cpu" else None
    pending = PendingCheck(spec, loaded, [], [], tempfile.TemporaryDirectory(prefix="arena-states-"), options,
                           policy, checker)
    try:
        pending.results, pending.states = _train(worker, spec, loaded, list(members), options, on_event,
                                                 list(checkpoint_paths or [None] * len(members)), policy,
                                                 basis or basis_for(options, worker.env), pending.folder.name)
    except BaseException:
        pending.cancel()
        raise
    return pending


def _train(
    worker: Worker, spec: Spec, loaded: LoadedVariant, members: list[Member], options: RunOptions,
    on_event: Callable[[int, dict[str, Any]], Any] | None, checkpoint_paths: list[str | None], policy: bool,
    basis: Basis, folder: str,
) -> tuple[list[RunResult], list[str]]:
    shared = {_frozen(hp) for _, hp in members}
    results, states = [], []
    for pack in packs(list(range(len(members))), options.execution.pack):
        paths = [str(Path(folder) / f"member{i}.pt") for i in pack]
        seeds = [members[i][0] for i in pack]
        hps = [dict(members[i][1] or {}) for i in pack]
        task = make_task(spec, loaded, seeds, hps[0] if len(shared) == 1 else None, options, None, basis)
        task = replace(task, state_paths=tuple(paths), policy=policy,
                       checkpoint_paths=tuple(checkpoint_paths[i] for i in pack),
                       member_hparams=tuple(hps) if len(shared) > 1 else ())

        def forward(event: dict[str, Any], pack: list[int] = pack) -> Any:
            if on_event is None:
                return None
            if "member" not in event:  # a phase of the whole pack: every member in it is in that phase
                for i in pack[1:]:
                    on_event(i, event)
            return on_event(pack[int(event.get("member", 0))], event)

        results.extend(worker.run_pack(task, forward))
        states.extend(paths)
    return results, states


def _frozen(hp: Mapping[str, float] | None) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((hp or {}).items()))


def run_trial(
    spec: Spec,
    loaded: LoadedVariant,
    seed: int,
    hparams: Mapping[str, float] | None = None,
    *,
    options: RunOptions | None = None,
    on_event: EventFn | None = None,
    checkpoint_path: str | None = None,
    basis: Basis | None = None,
) -> RunResult:
    """Run one trial in a fresh worker process, checked in a clean one, and return its result."""
    with Worker(standby=False) as worker:  # one trial: no next variant to start ahead
        paths = {seed: checkpoint_path} if checkpoint_path else None
        return run_checked(worker, spec, loaded, [seed], hparams, options or RunOptions(),
                           on_event=(lambda _s, e: on_event(e)) if on_event else None, checkpoint_paths=paths,
                           basis=basis)[0]
