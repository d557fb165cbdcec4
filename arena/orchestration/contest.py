"""Champion contests: run the seeds a decision needs, ask the policy, record the outcome in the registry.

* ``after_tournament`` crowns the first champion of a spec (``policy.first_champion``), or lets every entry whose
  mean beats the champion's challenge it.
* ``challenge`` runs one contest seed by seed (``policy.run_contest``): each seed trains both sides (memoized);
  when the champion's stored run on that seed came from another software stack (torch, CUDA, GPU, backend), the
  champion is re-run first, so both sides of every pair share one stack.
* ``noise`` is the spec's σ, from ``champions.stats`` on the reference variant's tournament seeds.

Outcomes are plain data with a plain-text message; the CLI decides how they look.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from arena.champions import stats
from arena.champions.policy import PolicySettings, Verdict, first_champion, run_contest
from arena.champions.registry import Registry
from arena.core.errors import ArenaError
from arena.core.home import checkpoints_dir
from arena.core.options import RunOptions
from arena.core.result import RunResult, hparams_key
from arena.core.spec import Spec
from arena.core.stack import same_stack
from arena.db.store import Store
from arena.orchestration.entries import Entry, Job, resolve_variant
from arena.orchestration.execute import execute, register
from arena.runner.inspection import inspect_one
from arena.runner.worker import run_trial

NoteFn = Callable[[str], None]


@dataclass(frozen=True)
class Outcome:
    """What a decision produced. ``kind``: first | promoted | kept | holds | none | current; ``message`` is one plain
    line with the numbers; ``artifacts`` the champion's folder when a champion was crowned."""

    kind: str
    message: str
    verdict: Verdict | None = None
    decision_id: int | None = None
    artifacts: Path | None = None

    @property
    def promoted(self) -> bool:
        return self.kind in ("first", "promoted")


class Contests:
    """Champion decisions of one spec, run through the runner and recorded in the store."""

    def __init__(
        self, store: Store, spec: Spec, options: RunOptions, *, settings: PolicySettings | None = None,
        checkpoint_dir: str | None = None, on_note: NoteFn | None = None,
    ) -> None:
        self.store, self.spec, self.options = store, spec, options
        self.registry = Registry(store, spec, settings)
        self.settings = self.registry.settings
        self.checkpoint_dir = checkpoint_dir or str(checkpoints_dir())
        self.on_note = on_note

    def _note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    # -- runs ------------------------------------------------------------------------------------------------------
    def stored(self, entry: Entry, seeds: Sequence[int]) -> dict[int, RunResult]:
        out = {}
        for seed in seeds:
            run = self.store.get_run(entry.key(self.spec, seed))
            if run is not None:
                out[seed] = run.result
        return out

    def ensure_runs(self, entry: Entry, seeds: Sequence[int], *, rerun: bool = False) -> dict[int, RunResult]:
        """The entry's results on these seeds, running what is not stored yet."""
        out = {} if rerun else self.stored(entry, seeds)
        todo = [Job(entry, seed) for seed in seeds if seed not in out]
        if todo:
            results = execute(self.store, self.spec, todo, self.options, checkpoint_dir=self.checkpoint_dir,
                              rerun=rerun)
            for result in results:
                out[result.seed] = result
        return out

    def entry_of(self, sha: str, hparams: Mapping[str, float], name: str) -> Entry:
        row = self.store.variant(sha)
        if row is None:
            raise ArenaError(f"the champion's variant {name} (sha {sha[:12]}) is missing from the store")
        origin = "file" if "@" not in name else "tuned"
        loaded = inspect_one(row.source, row.path, self.spec, data_flag=self.options.data_flag).loaded
        return Entry.of(loaded, hparams, name=name, origin=origin)

    def reference_entry(self) -> Entry:
        loaded = resolve_variant(self.spec.reference_variant, self.store, self.spec, self.options.data_flag)
        return Entry.of(loaded)

    # -- noise floor -----------------------------------------------------------------------------------------------
    def noise(self, measure: bool = False) -> float | None:
        """σ of the spec: the reference variant's seed-to-seed std on the tournament seeds (measured if asked)."""
        ref = self.reference_entry()
        if measure:
            register(self.store, self.spec, [ref])
            results = self.ensure_runs(ref, self.spec.seeds)
        else:
            results = self.stored(ref, self.spec.seeds)
        return stats.noise_floor_on({s: _loss(r) for s, r in results.items()}, self.spec.seeds)

    # -- contests --------------------------------------------------------------------------------------------------
    def champion_entry(self) -> Entry | None:
        row = self.registry.champion()
        return None if row is None else self.entry_of(row.challenger_sha, row.challenger_hparams, row.challenger_name)

    def challenge(self, entry: Entry) -> Outcome:
        """Run ``entry`` on the spec's seeds and, if there is a champion, contest it (paired, sequential)."""
        register(self.store, self.spec, [entry])
        champ = self.champion_entry()
        if champ is None:
            self.ensure_runs(entry, self.spec.seeds)
            return Outcome("none", f"no champion yet for spec {self.spec.label}: `arena tournament` crowns the first "
                                   "(the best variant if significantly better than the rest, "
                                   f"else {self.spec.reference_variant})")
        same_hp = hparams_key(champ.hparams.to_dict()) == hparams_key(entry.hparams.to_dict())
        if champ.loaded.sha256 == entry.loaded.sha256 and same_hp:
            self.ensure_runs(entry, self.spec.seeds)
            return Outcome("current", f"{entry.name} is the current champion of {self.spec.label}")
        sigma = self.noise(measure=True)
        if sigma is None:
            raise ArenaError(f"spec {self.spec.label} has no noise floor: {self.spec.reference_variant} needs ≥ 2 ok "
                             "seeds (arena noise --measure)")
        seeds = self.spec.contest_seeds()
        pairs: list[tuple[int, RunResult, RunResult]] = []

        def next_d(i: int) -> float:
            pair = self._pair(champ, entry, seeds[i])
            pairs.append(pair)
            return _loss(pair[1]) - _loss(pair[2])

        verdict = run_contest(next_d, sigma, self.settings)
        decision_id = self.registry.record_contest(_who(entry), _who(champ), verdict, pairs, sigma)
        kind = "promoted" if verdict.promoted else "kept"
        head = "PROMOTED" if verdict.promoted else "not promoted"
        folder = self._keep_artifacts(entry, [c for _, _, c in pairs]) if verdict.promoted else None
        return Outcome(kind, f"{head} {entry.name} vs champion {champ.name}: {verdict.message}", verdict,
                       decision_id, folder)

    def _pair(self, champ: Entry, entry: Entry, seed: int) -> tuple[int, RunResult, RunResult]:
        """Both sides' runs on one seed, from one software stack (the champion is re-run if its run is from another)."""
        chal = self.ensure_runs(entry, [seed])[seed]
        champ_run = self.ensure_runs(champ, [seed])[seed]
        if not same_stack(champ_run.env, champ_run.backend, chal.env, chal.backend):
            self._note(f"re-running champion {champ.name} seed {seed}: its stored run used another stack")
            champ_run = self.ensure_runs(champ, [seed], rerun=True)[seed]
            if not same_stack(champ_run.env, champ_run.backend, chal.env, chal.backend):
                chal = self.ensure_runs(entry, [seed], rerun=True)[seed]
        return seed, champ_run, chal

    def after_tournament(self, entries: Sequence[Entry]) -> list[Outcome]:
        """The champion decision that ends a tournament."""
        if len(self.spec.seeds) < 2:
            return [Outcome("none", f"no champion decision on {self.spec.label}: a paired test needs at least 2 "
                                    "seeds (--seeds)")]
        champ = self.champion_entry()
        results = {e.name: self.stored(e, self.spec.seeds) for e in entries}
        complete = {n: r for n, r in results.items() if len(r) == len(self.spec.seeds)}
        if champ is None:
            return [self._first_champion(entries, results, complete)]
        champ_mean = _mean(results.get(champ.name) or self.stored(champ, self.spec.seeds))
        challengers = sorted(
            (e for e in entries
             if e.name != champ.name and e.name in complete and _mean(complete[e.name]) < champ_mean),
            key=lambda e: _mean(complete[e.name]),
        )
        if not challengers:
            return [Outcome("holds", f"champion {champ.name} holds: no entry has a lower mean loss on "
                                     f"{self.spec.label}")]
        outcomes = []
        for e in challengers:
            outcome = self.challenge(e)
            outcomes.append(outcome)
        return outcomes

    def _first_champion(
        self, entries: Sequence[Entry], results: dict[str, dict[int, RunResult]],
        complete: dict[str, dict[int, RunResult]],
    ) -> Outcome:
        sigma = self.noise() or 0.0
        losses = {n: [_loss(r[s]) for s in self.spec.seeds] for n, r in complete.items()}
        if self.spec.reference_variant not in losses:
            return Outcome("none", f"no champion decided: the reference {self.spec.reference_variant} has not "
                                   "finished every seed")
        name, by_default, evidence = first_champion(losses, sigma, self.settings, self.spec.reference_variant)
        entry = next(e for e in entries if e.name == name)
        runs = list(results[name].values())
        decision_id = self.registry.record_first(entry.name, entry.loaded.sha256, entry.hparams, by_default,
                                                 evidence, runs)
        folder = self._keep_artifacts(entry, runs)
        tag = " (by default)" if by_default else ""
        return Outcome("first", f"first champion of {self.spec.label}: {name}{tag} — {evidence.get('reason', '')}",
                       None, decision_id, folder)

    def _keep_artifacts(self, entry: Entry, results: Sequence[RunResult]) -> Path:
        folder, missing = self.registry.keep_artifacts(entry.name, entry.loaded.sha256, entry.loaded.source,
                                                       entry.hparams, results)
        if missing is not None:  # memoized without a checkpoint: retrain that seed (deterministic) to save the weights
            run_trial(self.spec, entry.loaded, missing.seed, entry.hparams, options=self.options,
                      checkpoint_path=str(folder / f"seed{missing.seed}.pt"))
        return folder


def _who(entry: Entry) -> tuple[str, str, dict[str, float]]:
    return entry.name, entry.loaded.sha256, entry.hparams.to_dict()


def _loss(r: RunResult) -> float:
    return float(r.final_val_loss) if r.status == "ok" and r.final_val_loss is not None else math.nan


def _mean(results: dict[int, RunResult]) -> float:
    vals = [_loss(r) for r in results.values()]
    return math.fsum(vals) / len(vals) if vals and all(math.isfinite(v) for v in vals) else math.inf
