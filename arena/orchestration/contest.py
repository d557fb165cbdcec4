"""Champion decisions: run the seeds a decision needs, ask the policy, record the outcome in the registry.

Every decision is made on one basis (the code and the stack: ``arena.core.stack``): both sides of every pair are
runs of the same code on the same stack, because the run keys include both; a champion whose runs came from other
code or another stack is simply trained again on this basis.

* ``after_tournament`` decides a league's tournament as one family (``champions.familywise``): the first tournament
  of a spec and league crowns the reference by default; then the challengers (matched entries of the league with
  every tournament seed) are selected on the tournament seeds and confirmed on fresh seeds, with the error
  controlled over the whole family. A tournament run again with the same fingerprint (spec, league, basis,
  entries, champion) decides nothing new: it shows the stored outcome.
* ``challenge`` is the family of one that ``arena submit`` asks for.
* ``noise`` is the spec's σ, from ``champions.stats`` on the reference's tournament seeds (this basis).

Outcomes are plain data with a plain-text message; the CLI decides how they look.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arena.champions import familywise, stats
from arena.champions.policy import PolicySettings
from arena.champions.registry import Registry
from arena.core.errors import ArenaError
from arena.core.home import checkpoints_dir
from arena.core.options import RunOptions
from arena.core.result import RunResult, hparams_key
from arena.core.spec import Spec
from arena.core.stack import Basis
from arena.db.store import Store
from arena.orchestration.entries import DEFAULT_LEAGUE, Entry, Job, resolve_variant
from arena.orchestration.execute import execute, register
from arena.runner.inspection import inspect_one

NoteFn = Callable[[str], None]
# Trains and records jobs, returning their results (the CLI's: under its progress display); the second argument
# names them for a title.
TrainFn = Callable[[Sequence[Job], str], list[RunResult]]


@dataclass(frozen=True)
class Outcome:
    """What a decision produced. ``kind``: default | promoted | kept | holds | none | current | decided;
    ``message`` is one plain line with the numbers; ``entry`` the challenger it is about (None for the league);
    ``artifacts`` the champion's folder when one was crowned."""

    kind: str
    message: str
    entry: str | None = None
    decision_id: int | None = None
    artifacts: Path | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def promoted(self) -> bool:
        return self.kind in ("default", "promoted")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "entry": self.entry, "decision_id": self.decision_id}


class Contests:
    """Champion decisions of one spec and league on one basis, run through the runner and recorded in the store."""

    def __init__(
        self, store: Store, spec: Spec, options: RunOptions, basis: Basis, *, league: str = DEFAULT_LEAGUE,
        settings: PolicySettings | None = None, checkpoint_dir: str | None = None, on_note: NoteFn | None = None,
        trainer: TrainFn | None = None,
    ) -> None:
        self.store, self.spec, self.options, self.basis, self.league = store, spec, options, basis, league
        self.registry = Registry(store, spec, settings, league=league, basis=basis)
        self.settings = self.registry.settings
        self.checkpoint_dir = checkpoint_dir or str(checkpoints_dir())
        self.on_note = on_note
        self.trainer = trainer

    def _note(self, text: str) -> None:
        if self.on_note is not None:
            self.on_note(text)

    # -- runs ------------------------------------------------------------------------------------------------------
    def stored(self, entry: Entry, seeds: Sequence[int]) -> dict[int, RunResult]:
        out = {}
        for seed in seeds:
            run = self.store.get_run(entry.key(self.spec, seed, self.basis))
            if run is not None:
                out[seed] = run.result
        return out

    def ensure_runs(self, entry: Entry, seeds: Sequence[int]) -> dict[int, RunResult]:
        """The entry's results on these seeds (this basis), running what is not stored yet. A run that arena's own
        machinery failed to finish is not stored and is missing from the answer."""
        return self.ensure_many([entry], seeds)[entry.name]

    def ensure_many(self, entries: Sequence[Entry], seeds: Sequence[int]) -> dict[str, dict[int, RunResult]]:
        """``ensure_runs`` of several entries as one execution (a champion and its challenger: their groups share
        the engine's slots, processes started ahead and overlapped checks, instead of one command each)."""
        out = {e.name: self.stored(e, seeds) for e in entries}
        todo = [Job(e, seed) for e in entries for seed in seeds if seed not in out[e.name]]
        if todo:
            names = ", ".join(dict.fromkeys(job.entry.name for job in todo))
            title = f"decision: {names} on seeds {', '.join(map(str, sorted({j.seed for j in todo})))}"
            if self.trainer is not None:
                done = self.trainer(todo, title)
            else:
                done = execute(self.store, self.spec, todo, self.options, self.basis,
                               checkpoint_dir=self.checkpoint_dir)
            # Recorded by now. Each result goes to its entry by what identifies the run (a tuned entry's result is
            # named for its variant, like the champion it may face, but its hyperparameters are its own).
            ids = {(e.loaded.sha256, hparams_key(e.hparams.to_dict())): e.name for e in entries}
            for result in done:
                name = ids.get((result.variant_sha, hparams_key(result.hparams)))
                if name is not None:
                    out[name][result.seed] = result
        return out

    def entry_of(self, sha: str, hparams: Mapping[str, float], name: str) -> Entry:
        row = self.store.variant(sha)
        if row is None:
            raise ArenaError(f"the champion's variant {name} (sha {sha[:12]}) is missing from the store")
        origin = "file" if "@" not in name else "tuned"
        loaded = inspect_one(row.source, row.path, self.spec, data_flag=self.options.data_flag).loaded
        return Entry.of(loaded, hparams, name=name, origin=origin, league=self.league)

    def reference_entry(self) -> Entry:
        loaded = resolve_variant(self.spec.reference_variant, self.store, self.spec, self.options.data_flag)
        return Entry.of(loaded)

    # -- noise floor -----------------------------------------------------------------------------------------------
    def noise(self, measure: bool = False) -> float | None:
        """σ of the spec on this basis: the reference's seed-to-seed std on the tournament seeds (measured if
        asked). The same σ for every league: it is a property of the seeds, not of the hyperparameters."""
        ref = self.reference_entry()
        if measure:
            register(self.store, self.spec, [ref])
            results = self.ensure_runs(ref, self.spec.seeds)
        else:
            results = self.stored(ref, self.spec.seeds)
        return stats.noise_floor_on({s: _loss(r) for s, r in results.items()}, self.spec.seeds)

    # -- the champion ----------------------------------------------------------------------------------------------
    def champion_entry(self) -> Entry | None:
        row = self.registry.champion()
        return None if row is None else self.entry_of(row.challenger_sha, row.challenger_hparams, row.challenger_name)

    def _crown_default(self, entries: Sequence[Entry], tournament_id: int | None) -> tuple[Entry | None, Outcome]:
        """The first champion of a spec and league: the league's reference entry, by default."""
        ref_name = self.spec.reference_variant
        candidates = [e for e in entries if e.loaded.name == ref_name and e.matched]
        if self.league == DEFAULT_LEAGUE:
            candidates = [e for e in candidates if e.origin == "file"]
        if not candidates:
            return None, Outcome("none", f"no champion in league {self.league} of {self.spec.label}: the reference "
                                         f"{ref_name} is not among its entries")
        ref = candidates[0]
        runs = self.stored(ref, self.spec.seeds)
        if len(runs) < len(self.spec.seeds) or any(r.status != "ok" for r in runs.values()):
            return None, Outcome("none", f"no champion in league {self.league} of {self.spec.label}: the reference "
                                         f"{ref.name} has not finished every tournament seed ok")
        reason = (f"{ref.name} by default: the first champion of {self.spec.label} (league {self.league}) is the "
                  "reference; every challenger must beat it under the promotion rule")
        decision_id = self.registry.record_default(_who(ref), reason, list(runs.values()), tournament_id)
        folder = self._keep_artifacts(ref, list(runs.values()))
        return ref, Outcome("default", f"first champion: {reason}", ref.name, decision_id, folder)

    # -- decisions -------------------------------------------------------------------------------------------------
    def fingerprint(self, entries: Sequence[Entry]) -> str:
        """What makes two tournaments the same decision: spec, league, basis, the entries and the champion."""
        champ = self.registry.champion()
        text = json.dumps({
            "spec": self.spec.hash, "league": self.league, "code": self.basis.code, "stack": self.basis.stack,
            "entries": sorted([e.name, e.loaded.sha256, hparams_key(e.hparams.to_dict())] for e in entries),
            "champion": None if champ is None else champ.id, "settings": repr(self.settings),
        }, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def after_tournament(self, entries: Sequence[Entry], tournament_id: int | None = None) -> list[Outcome]:
        """The champion decision that ends a league's tournament (``entries``: the league's entries)."""
        if len(self.spec.seeds) < 2:
            return [Outcome("none", f"no champion decision on {self.spec.label}: a paired test needs at least 2 "
                                    "seeds (--seeds)")]
        outcomes: list[Outcome] = []
        champ = self.champion_entry()
        if champ is None:
            champ, first = self._crown_default(entries, tournament_id)
            outcomes.append(first)
            if champ is None:
                return outcomes
        challengers = [e for e in entries if not _same(e, champ)]
        outcomes += self._decide(champ, challengers, tournament_id)
        return outcomes

    def challenge(self, entry: Entry) -> list[Outcome]:
        """Run ``entry`` on the spec's seeds and, if there is a champion, decide it as a family of one."""
        register(self.store, self.spec, [entry])
        champ = self.champion_entry()
        self.ensure_runs(entry, self.spec.seeds)
        if champ is None:
            return [Outcome("none", f"no champion yet for {self.spec.label} (league {self.league}): `arena "
                                    f"tournament` crowns the first ({self.spec.reference_variant} by default)",
                            entry.name)]
        if _same(entry, champ):
            return [Outcome("current", f"{entry.name} is the current champion of {self.spec.label}", entry.name)]
        return self._decide(champ, [entry], None)

    def _decide(self, champ: Entry, challengers: Sequence[Entry], tournament_id: int | None) -> list[Outcome]:
        """Select on the tournament seeds, confirm on fresh seeds (``champions.familywise``), record, crown."""
        sigma = self.noise(measure=True)
        if sigma is None:
            raise ArenaError(f"spec {self.spec.label} has no noise floor: {self.spec.reference_variant} needs ≥ 2 ok "
                             "tournament seeds (arena noise --measure)")
        seeds = self.spec.seeds
        champ_runs = self.ensure_runs(champ, seeds)
        notes: list[Outcome] = []
        d_select: dict[str, list[float]] = {}
        by_name: dict[str, Entry] = {}
        for e in challengers:
            if not e.matched:
                notes.append(Outcome("none", f"{e.name} is unmatched (match_params=False): shown, never crowned over "
                                             "a matched champion", e.name))
                continue
            runs = self.stored(e, seeds)
            if len(runs) < len(seeds) or len(champ_runs) < len(seeds):
                notes.append(Outcome("none", f"{e.name}: not every tournament seed finished on this basis; "
                                             "not a challenger this time", e.name))
                continue
            d_select[e.name] = [_loss(champ_runs[s]) - _loss(runs[s]) for s in seeds]
            by_name[e.name] = e
        if not d_select:
            return notes
        fresh_seeds = self.spec.contest_seeds()[len(seeds):]
        fresh_pairs: dict[str, list[tuple[int, RunResult, RunResult]]] = {}

        trained: dict[str, dict[int, RunResult]] = {}

        def runs_of(name: str) -> tuple[dict[int, RunResult], dict[int, RunResult]]:
            # All of a candidate's fresh seeds, and the champion's at the first candidate, as one execution at its
            # first use: a process start and a clean check per seed would cost more than the few runs a futile
            # stop might have spared (they stay stored, memoized).
            need = [e for e in (champ, by_name[name]) if e.name not in trained]
            if need:
                trained.update(self.ensure_many(need, fresh_seeds))
            return trained[champ.name], trained[name]

        def fresh(name: str, i: int) -> float:
            seed = fresh_seeds[i]
            champ_runs_fresh, chal_runs = runs_of(name)
            champ_run, chal_run = champ_runs_fresh.get(seed), chal_runs.get(seed)
            if champ_run is None or chal_run is None:
                raise ArenaError(f"seed {seed} of {name} or {champ.name} could not be finished by arena "
                                 "(a machinery failure, nothing stored): run the command again")
            fresh_pairs.setdefault(name, []).append((seed, champ_run, chal_run))
            return _loss(champ_run) - _loss(chal_run)

        decision = familywise.decide(d_select, fresh, sigma, self.settings, self.spec.contest_seeds())
        return notes + self._record(champ, by_name, decision, champ_runs, fresh_pairs, fresh_seeds, tournament_id)

    def _record(
        self, champ: Entry, by_name: Mapping[str, Entry], decision: familywise.TournamentDecision,
        champ_runs: Mapping[int, RunResult], fresh_pairs: Mapping[str, list[tuple[int, RunResult, RunResult]]],
        fresh_seeds: Sequence[int], tournament_id: int | None,
    ) -> list[Outcome]:
        """One decision row per candidate (confirmed or not); a line for every other challenger; crown the winner."""
        outcomes: list[Outcome] = []
        family = decision.to_dict()
        messages = decision.verdicts()
        confirmations = {c.name: c for c in decision.confirmations}
        for name, entry in by_name.items():
            message = messages[name]
            if name not in confirmations or confirmations[name].n == 0:  # never trained on a fresh seed
                outcomes.append(Outcome("kept", f"{name}: {message}", name))
                continue
            promoted = decision.winner == name
            select_runs = self.stored(entry, self.spec.seeds)
            pairs = [(s, champ_runs[s], select_runs[s]) for s in self.spec.seeds] + list(fresh_pairs.get(name, []))
            evidence = {"family": family, "selection_seeds": list(self.spec.seeds),
                        "fresh_seeds": [s for s, _, _ in fresh_pairs.get(name, [])], "message": message}
            reason = "promoted" if promoted else confirmations[name].reason
            decision_id = self.registry.record_confirmation(_who(entry), _who(champ), promoted, reason, evidence,
                                                            pairs, tournament_id)
            folder = None
            if promoted:
                folder = self._keep_artifacts(entry, [c for _, _, c in pairs])
            head = "PROMOTED" if promoted else "not promoted"
            outcomes.append(Outcome("promoted" if promoted else "kept",
                                    f"{head} {name} vs champion {champ.name}: {message}", name, decision_id, folder,
                                    evidence))
        if decision.winner is None:
            outcomes.append(Outcome("holds", f"champion {champ.name} holds in league {self.league} of "
                                             f"{self.spec.label}: {decision.message}"))
        return outcomes

    def _keep_artifacts(self, entry: Entry, results: Sequence[RunResult]) -> Path:
        folder, missing = self.registry.keep_artifacts(entry.name, entry.loaded.sha256, entry.loaded.source,
                                                       entry.hparams, results)
        if missing is not None:  # never retrained to make one: the champion's folder says it has none
            self._note(f"{entry.name} seed {missing.seed} kept no checkpoint; the champion's folder has none")
        return folder


def _same(a: Entry, b: Entry) -> bool:
    return a.loaded.sha256 == b.loaded.sha256 and hparams_key(a.hparams.to_dict()) == hparams_key(b.hparams.to_dict())


def _who(entry: Entry) -> tuple[str, str, dict[str, float]]:
    return entry.name, entry.loaded.sha256, entry.hparams.to_dict()


def _loss(r: RunResult) -> float:
    return float(r.final_val_loss) if r.status == "ok" and r.final_val_loss is not None else math.nan
