"""A tournament: its entries, its plan on one basis, its runs, and one champion decision per league.

``prepare`` inspects the entries and plans the runs (nothing is written); ``run_league_decisions`` records the
tournament and decides it. A tournament run again with nothing new (same spec, league, basis, entries and champion)
trains nothing (every run is memoized) and appends no decision: its stored outcome is shown instead.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from dataclasses import dataclass

from arena.core.errors import ArenaError
from arena.core.options import RunOptions
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.db.store import Store
from arena.orchestration.contest import Contests, NoteFn, Outcome, TrainFn
from arena.orchestration.entries import DEFAULT_LEAGUE, Entry, Job, tournament_entries
from arena.orchestration.execute import plan
from arena.runner.provenance import basis_for


@dataclass(frozen=True)
class Plan:
    """What a tournament will do: its entries by league, what was refused, the jobs still to run on ``basis``."""

    spec: Spec
    basis: Basis
    entries: tuple[Entry, ...]
    refused: tuple[str, ...]
    jobs: tuple[Job, ...]

    @property
    def memoized(self) -> int:
        return len(self.entries) * len(self.spec.seeds) - len(self.jobs)

    @property
    def leagues(self) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for e in self.entries:
            out.setdefault(e.league, []).append(e)
        return dict(sorted(out.items(), key=lambda kv: (kv[0] != DEFAULT_LEAGUE, kv[0])))


def prepare(
    store: Store | None, spec: Spec, options: RunOptions, names: Sequence[str] | None = None, *,
    rerun: bool = False, rerun_failed: Sequence[str] = (),
) -> Plan:
    """Inspect the entries (in worker processes) and plan their runs on this machine's basis; writes nothing."""
    if options.data_flag:  # a --data that names no valid corpus fails here, before anything is written or trained
        from arena.runner.corpus import resolve_corpus

        resolve_corpus(spec.track, options.data_flag)
    # On a GPU the basis comes from a probe process (≈ 14 s on an H200: the kernels' imports, a CUDA context):
    # it runs beside the entries' checks rather than after them.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        probing = pool.submit(basis_for, options, _worker_env(options))
        entries, refused = tournament_entries(store, spec, names, options.data_flag)
        if not entries:
            probing.cancel()
            raise ArenaError("no entry passed its check; nothing to run (see the lines above)")
        basis = probing.result()
    jobs = plan(store, spec, entries, spec.seeds, basis, rerun=rerun, rerun_failed=rerun_failed) if store else [
        Job(e, s) for s in spec.seeds for e in entries]
    return Plan(spec, basis, tuple(entries), tuple(refused), tuple(jobs))


def _worker_env(options: RunOptions) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": str(options.gpus[0])} if options.gpus else {}


def decide(
    store: Store, the_plan: Plan, options: RunOptions, *, checkpoint_dir: str | None = None,
    on_note: NoteFn | None = None, trainer: TrainFn | None = None,
) -> list[Outcome]:
    """One champion decision per league, each recorded with its tournament; a repeat decides nothing new.
    ``trainer`` trains the runs a decision needs (default: ``execute`` with no display)."""
    outcomes: list[Outcome] = []
    for league, entries in the_plan.leagues.items():
        contests = Contests(store, the_plan.spec, options, the_plan.basis, league=league,
                            checkpoint_dir=checkpoint_dir, on_note=on_note, trainer=trainer)
        fingerprint = contests.fingerprint(entries)
        done = store.completed_tournament(fingerprint)
        if done is not None:
            outcomes.append(Outcome("decided", f"league {league}: already decided by tournament #{done.id} "
                                               f"({done.finished:%Y-%m-%d %H:%M} UTC); nothing new to decide"))
            outcomes += [Outcome(o["kind"], o["message"], o.get("entry"), o.get("decision_id"))
                         for o in (done.outcome or [])]
            continue
        tid = store.start_tournament(the_plan.spec.hash, league, the_plan.basis.code, the_plan.basis.stack,
                                     the_plan.basis.info, fingerprint, sorted(e.name for e in entries))
        league_outcomes = contests.after_tournament(entries, tid)
        # The fingerprint of the state the decision left (its champion): running it again finds it.
        store.finish_tournament(tid, [o.to_dict() for o in league_outcomes], contests.fingerprint(entries))
        outcomes += league_outcomes
    return outcomes
