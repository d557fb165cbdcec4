"""The champion registry: runs contests through the runner and the store, and keeps the append-only history.

* ``after_tournament`` crowns the first champion of a spec (``policy.first_champion``), or lets every entry whose
  mean beats the champion's challenge it.
* ``challenge`` runs one contest seed by seed (``policy.run_contest``): each seed trains both sides (memoized);
  when the champion's stored run on that seed came from another software stack (torch, CUDA, GPU, backend), the
  champion is re-run here first, so both sides of every pair share one stack.
* Every decision, promoted or not, is stored with its evidence. A new champion's source and its best seed's
  checkpoint are kept under ``<arena home>/artifacts/champions/<spec hash>/``.
"""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from arena.champions.policy import PolicySettings, Verdict, first_champion, noise_floor, run_contest
from arena.db.store import DecisionRecord, Store
from arena.errors import ArenaError
from arena.home import arena_home, artifacts_dir, checkpoints_dir
from arena.runner.env import same_stack, stack_key
from arena.runner.result import RunResult, hparams_key
from arena.runner.spec import Spec
from arena.tournament import Entry, Job, RunOptions, execute
from arena.variants_loader import builtin, load_source

Say = Callable[[str], None]


def load_settings(spec: Spec) -> PolicySettings:
    """Policy settings for this arena: defaults, overridden by ``[champion]`` in ``<arena home>/config.toml``."""
    values: dict[str, Any] = {}
    path = arena_home() / "config.toml"
    if path.exists():
        try:
            values = dict(tomllib.loads(path.read_text()).get("champion", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ArenaError(f"{path}: cannot read it ({exc}); fix or remove the file") from None
    allowed = {"alpha", "margin", "borderline_p", "futility_after", "n_looks"}
    unknown = set(values) - allowed
    if unknown:
        raise ArenaError(f"{path}: unknown [champion] key(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    n_max = max(spec.max_seeds, len(spec.seeds))
    return PolicySettings(n_start=len(spec.seeds), n_max=n_max, **values)


@dataclass
class Outcome:
    """What a challenge produced: the verdict and, when it was decided, the stored decision's id."""

    verdict: Verdict | None
    message: str
    decision_id: int | None = None


class Registry:
    def __init__(
        self, store: Store, spec: Spec, options: RunOptions, *, settings: PolicySettings | None = None,
        console: Any = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.options = replace(options, checkpoint_dir=options.checkpoint_dir or str(checkpoints_dir()))
        self.settings = settings or load_settings(spec)
        self.console = console

    def _say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text)

    # -- runs ------------------------------------------------------------------------------------------------------
    def ensure_runs(self, entry: Entry, seeds: Sequence[int], *, rerun: bool = False) -> dict[int, RunResult]:
        """The entry's results on these seeds, running what is not stored yet."""
        out: dict[int, RunResult] = {}
        todo = []
        for seed in seeds:
            stored = self.store.get_run(entry.key(self.spec, seed))
            if stored is not None and not rerun:
                out[seed] = stored.result
            else:
                todo.append(Job(entry, seed))
        if todo:
            for result in execute(self.store, self.spec, todo, self.options, rerun=rerun):
                out[result.seed] = result
        return out

    def entry_of(self, sha: str, hparams: dict[str, float], name: str) -> Entry:
        row = self.store.variant(sha)
        if row is None:
            raise ArenaError(f"the champion's variant {name} (sha {sha[:12]}) is missing from the store")
        origin = "file" if "@" not in name else "tuned"
        return Entry.of(load_source(row.source, row.path), hparams, name=name, origin=origin)

    def reference_entry(self) -> Entry:
        row = self.store.latest_variant(self.spec.reference_variant)
        loaded = load_source(row.source, row.path) if row is not None else builtin(self.spec.reference_variant)
        return Entry.of(loaded)

    # -- noise floor -----------------------------------------------------------------------------------------------
    def noise(self, measure: bool = False) -> float | None:
        """σ of the spec: the reference variant's seed-to-seed std on the tournament seeds (measured if asked)."""
        ref = self.reference_entry()
        if measure:
            from arena.tournament import register

            register(self.store, self.spec, [ref])
            results = self.ensure_runs(ref, self.spec.seeds)
        else:
            results = {}
            for seed in self.spec.seeds:
                stored = self.store.get_run(ref.key(self.spec, seed))
                if stored is not None:
                    results[seed] = stored.result
        losses = [r.final_val_loss for r in results.values() if r.status == "ok" and r.final_val_loss is not None]
        try:
            return noise_floor(losses)
        except ValueError:
            return None

    # -- contests --------------------------------------------------------------------------------------------------
    def champion_entry(self) -> tuple[Entry, Any] | None:
        row = self.store.champion(self.spec.hash)
        if row is None:
            return None
        return self.entry_of(row.challenger_sha, row.challenger_hparams, row.challenger_name), row

    def challenge(self, entry: Entry) -> Outcome:
        """Run ``entry`` on the spec's seeds and, if there is a champion, contest it (paired, sequential)."""
        from arena.tournament import register

        register(self.store, self.spec, [entry])
        current = self.champion_entry()
        if current is None:
            self.ensure_runs(entry, self.spec.seeds)
            return Outcome(None, f"no champion yet for spec {self.spec.label}: `arena tournament` crowns the first "
                                 "(the best variant if significantly better than the rest, "
                                 f"else {self.spec.reference_variant})")
        champ, _ = current
        if champ.loaded.sha256 == entry.loaded.sha256 and hparams_key(champ.hparams) == hparams_key(entry.hparams):
            self.ensure_runs(entry, self.spec.seeds)
            return Outcome(None, f"{entry.name} is the current champion of {self.spec.label}")
        sigma = self.noise(measure=True)
        if sigma is None:
            raise ArenaError(f"spec {self.spec.label} has no noise floor: "
                             f"{self.spec.reference_variant} needs ≥ 2 ok seeds "
                             "(arena noise --measure)")
        seeds = self.spec.contest_seeds()
        pairs: list[tuple[int, RunResult, RunResult]] = []

        def next_d(i: int) -> float:
            seed = seeds[i]
            chal = self.ensure_runs(entry, [seed])[seed]
            champ_run = self.ensure_runs(champ, [seed])[seed]
            if not same_stack(champ_run.env, champ_run.backend, chal.env, chal.backend):
                self._say(f"  [dim]re-running champion {champ.name} seed {seed}: "
                          "its stored run used another stack[/dim]")
                champ_run = self.ensure_runs(champ, [seed], rerun=True)[seed]
                if not same_stack(champ_run.env, champ_run.backend, chal.env, chal.backend):
                    chal = self.ensure_runs(entry, [seed], rerun=True)[seed]
            pairs.append((seed, champ_run, chal))
            return _loss(champ_run) - _loss(chal)

        verdict = run_contest(next_d, sigma, self.settings)
        decision_id = self._record(entry, champ, verdict, pairs, sigma, by_default=False)
        head = "[bold green]PROMOTED[/bold green]" if verdict.promoted else "[yellow]not promoted[/yellow]"
        message = f"{head} {entry.name} vs champion {champ.name}: {verdict.message}"
        if verdict.promoted:
            folder = self._keep_artifacts(entry, [c for _, _, c in pairs])
            message += f"\n  champion artifacts: {folder}"
        return Outcome(verdict, message, decision_id)

    def after_tournament(self, entries: Sequence[Entry]) -> list[str]:
        """The champion decision that ends a tournament; returns the lines to print."""
        lines: list[str] = []
        if len(self.spec.seeds) < 2:
            return [f"no champion decision on {self.spec.label}: a paired test needs at least 2 seeds (--seeds)"]
        current = self.champion_entry()
        results = {e.name: self._results(e) for e in entries}
        complete = {n: r for n, r in results.items() if len(r) == len(self.spec.seeds)}
        if current is None:
            sigma = self.noise() or 0.0
            losses = {n: [_loss(r[s]) for s in self.spec.seeds] for n, r in complete.items()}
            if self.spec.reference_variant not in losses:
                return [f"no champion decided: the reference {self.spec.reference_variant} has not finished every seed"]
            name, by_default, evidence = first_champion(losses, sigma, self.settings, self.spec.reference_variant)
            entry = next(e for e in entries if e.name == name)
            decision = DecisionRecord(
                spec_hash=self.spec.hash, challenger_name=entry.name, challenger_sha=entry.loaded.sha256,
                challenger_hparams=entry.hparams, champion_name=None, champion_sha=None, champion_hparams=None,
                promoted=not by_default, by_default=by_default, reason=str(evidence.get("reason", "")),
                evidence=_json_safe(evidence | {"env": _env_of(results[name].values())}),
            )
            self.store.record_decision(decision)
            folder = self._keep_artifacts(entry, list(results[name].values()))
            tag = " (by default)" if by_default else ""
            reason = evidence.get("reason", "")
            lines.append(f"[bold]first champion of {self.spec.label}: {name}{tag}[/bold] — {reason}")
            lines.append(f"  champion artifacts: {folder}")
            return lines
        champ, _ = current
        champ_mean = _mean(results.get(champ.name) or self._results(champ))
        challengers = sorted(
            (e for e in entries
             if e.name != champ.name and e.name in complete and _mean(complete[e.name]) < champ_mean),
            key=lambda e: _mean(complete[e.name]),
        )
        if not challengers:
            lines.append(f"champion {champ.name} holds: no entry has a lower mean loss on {self.spec.label}")
        for e in challengers:
            outcome = self.challenge(e)
            lines.append(outcome.message)
            if outcome.verdict is not None and outcome.verdict.promoted:
                champ = e
        return lines

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    def _results(self, entry: Entry) -> dict[int, RunResult]:
        out = {}
        for seed in self.spec.seeds:
            stored = self.store.get_run(entry.key(self.spec, seed))
            if stored is not None:
                out[seed] = stored.result
        return out

    def _record(
        self, entry: Entry, champ: Entry, verdict: Verdict, pairs: list[tuple[int, RunResult, RunResult]],
        sigma: float, *, by_default: bool,
    ) -> int:
        ids = {}
        for seed, c, ch in pairs:
            cr, chr_ = self.store.get_run(c.key), self.store.get_run(ch.key)
            ids[str(seed)] = {"champion_run": cr.id if cr else None, "challenger_run": chr_.id if chr_ else None}
        evidence = {
            "seeds": [s for s, _, _ in pairs], "d": list(verdict.d), "n": verdict.n, "mean": verdict.mean,
            "std": verdict.std, "t": verdict.t, "p": verdict.p, "delta": verdict.delta, "alpha": self.settings.alpha,
            "alpha_look": verdict.alpha_look, "sigma": sigma, "margin": self.settings.margin, "runs": ids,
            "schedule": list(self.settings.schedule), "env": _env_of([ch for _, _, ch in pairs]),
            "message": verdict.message,
        }
        return self.store.record_decision(DecisionRecord(
            spec_hash=self.spec.hash, challenger_name=entry.name, challenger_sha=entry.loaded.sha256,
            challenger_hparams=entry.hparams, champion_name=champ.name, champion_sha=champ.loaded.sha256,
            champion_hparams=champ.hparams, promoted=verdict.promoted, by_default=by_default, reason=verdict.reason,
            evidence=_json_safe(evidence),
        ))

    def champion_dir(self, entry: Entry) -> Path:
        return artifacts_dir() / "champions" / self.spec.hash / f"{entry.name}-{entry.loaded.sha256[:8]}"

    def _keep_artifacts(self, entry: Entry, results: Sequence[RunResult]) -> Path:
        """Source snapshot, the best seed's checkpoint and a JSON summary, in the champion's artifact folder."""
        folder = self.champion_dir(entry)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "variant.py").write_text(entry.loaded.source, encoding="utf-8")
        ok = [r for r in results if r.status == "ok" and r.final_val_loss is not None]
        best = min(ok, key=lambda r: r.final_val_loss or math.inf, default=None)
        if best is not None:
            target = folder / f"seed{best.seed}.pt"
            if best.checkpoint_path and Path(best.checkpoint_path).exists():
                shutil.copyfile(best.checkpoint_path, target)
            else:  # memoized without a checkpoint: retrain that seed (deterministic) just to save the weights
                from arena.runner.worker import run_trial

                run_trial(self.spec, entry.loaded, best.seed, entry.hparams, timeout_s=self.options.timeout_s,
                          device=self.options.device, backend=self.options.backend,
                          data_flag=self.options.data_flag, checkpoint_path=str(target))
        summary = {
            "spec_hash": self.spec.hash, "spec": self.spec.to_dict(), "name": entry.name,
            "variant_sha": entry.loaded.sha256, "hparams": entry.hparams, "best_seed": best.seed if best else None,
            "best_val_loss": best.final_val_loss if best else None,
        }
        (folder / "champion.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return folder


def _loss(r: RunResult) -> float:
    return float(r.final_val_loss) if r.status == "ok" and r.final_val_loss is not None else math.nan


def _mean(results: dict[int, RunResult]) -> float:
    vals = [_loss(r) for r in results.values()]
    return math.fsum(vals) / len(vals) if vals and all(math.isfinite(v) for v in vals) else math.inf


def _env_of(results: Any) -> dict[str, Any]:
    for r in results:
        return stack_key(r.env, r.backend) | {"git_commit": r.env.get("git_commit")}
    return {}


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj
