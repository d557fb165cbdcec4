"""The champion registry: who is champion of a spec, every decision with its evidence (append-only), and the
champion's artifacts. It decides nothing itself (``policy`` does) and runs nothing (``arena.orchestration.contest``
runs contests and calls it to record their outcome).

A champion's source and its best seed's checkpoint are kept under ``<arena home>/artifacts/champions/<spec hash>/``.
"""

from __future__ import annotations

import json
import math
import shutil
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from arena.champions.policy import PolicySettings
from arena.core.errors import ArenaError
from arena.core.home import arena_home, artifacts_dir
from arena.core.result import RunResult
from arena.core.spec import Spec
from arena.core.stack import Basis, stack_key
from arena.db.store import DecisionRecord, DecisionRow, Store

SETTING_KEYS = ("alpha", "margin", "borderline_p", "futility_after", "n_looks", "max_candidates", "select_min",
                "confirm")


def load_settings(spec: Spec) -> PolicySettings:
    """Policy settings for this arena: defaults, overridden by ``[champion]`` in ``<arena home>/config.toml``."""
    values: dict[str, Any] = {}
    path = arena_home() / "config.toml"
    if path.exists():
        try:
            values = dict(tomllib.loads(path.read_text()).get("champion", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ArenaError(f"{path}: cannot read it ({exc}); fix or remove the file") from None
    unknown = set(values) - set(SETTING_KEYS)
    if unknown:
        raise ArenaError(f"{path}: unknown [champion] key(s) {sorted(unknown)}; allowed: {sorted(SETTING_KEYS)}")
    n_max = max(spec.max_seeds, len(spec.seeds))
    return PolicySettings(n_start=len(spec.seeds), n_max=n_max, **values)


Who = tuple[str, str, Mapping[str, float]]  # (entry name, variant sha, hyperparameters)


class Registry:
    """The champion bookkeeping of one spec and league in one store, on one basis (code + stack)."""

    def __init__(self, store: Store, spec: Spec, settings: PolicySettings | None = None, *, league: str = "default",
                 basis: Basis | None = None) -> None:
        self.store = store
        self.spec = spec
        self.settings = settings or load_settings(spec)
        self.league = league
        self.basis = basis

    def champion(self) -> DecisionRow | None:
        """The decision that made the current champion (None before the first tournament decided one)."""
        return self.store.champion(self.spec.hash, self.league)

    def _record(self, challenger: Who, champion: Who | None, *, promoted: bool, by_default: bool, reason: str,
                evidence: dict[str, Any], tournament_id: int | None) -> int:
        (c_name, c_sha, c_hp) = challenger
        k_name, k_sha, k_hp = champion if champion is not None else (None, None, None)
        return self.store.record_decision(DecisionRecord(
            spec_hash=self.spec.hash, challenger_name=c_name, challenger_sha=c_sha, challenger_hparams=dict(c_hp),
            champion_name=k_name, champion_sha=k_sha, champion_hparams=None if k_hp is None else dict(k_hp),
            promoted=promoted, by_default=by_default, reason=reason, evidence=json_safe(evidence),
            league=self.league, code_digest=self.basis.code if self.basis else None,
            stack_id=self.basis.stack if self.basis else None, tournament_id=tournament_id,
        ))

    def record_default(self, reference: Who, reason: str, results: Sequence[RunResult],
                       tournament_id: int | None = None) -> int:
        """Store the first champion of the spec and league: the reference, by default (it then defends the title
        under the same rule as every later champion)."""
        return self._record(reference, None, promoted=False, by_default=True, reason=reason,
                            evidence={"reason": reason, "env": env_of(results)}, tournament_id=tournament_id)

    def record_confirmation(
        self, challenger: Who, champion: Who, promoted: bool, reason: str, evidence: dict[str, Any],
        pairs: Sequence[tuple[int, RunResult, RunResult]], tournament_id: int | None = None,
    ) -> int:
        """Store one challenger's verdict (promoted or not) with its evidence: every seed's pair of run ids and the
        tests (selection and confirmation)."""
        ids = {}
        for seed, c, ch in pairs:
            cr, chr_ = self.store.get_run(c.key), self.store.get_run(ch.key)
            ids[str(seed)] = {"champion_run": cr.id if cr else None, "challenger_run": chr_.id if chr_ else None}
        evidence = evidence | {"runs": ids, "env": env_of([ch for _, _, ch in pairs]), "alpha": self.settings.alpha,
                               "margin": self.settings.margin}
        return self._record(challenger, champion, promoted=promoted, by_default=False, reason=reason,
                            evidence=evidence, tournament_id=tournament_id)

    # -- artifacts -------------------------------------------------------------------------------------------------
    def champion_dir(self, name: str, sha: str) -> Path:
        return artifacts_dir() / "champions" / self.spec.hash / f"{name}-{sha[:8]}"

    def keep_artifacts(
        self, name: str, sha: str, source: str, hparams: Mapping[str, float], results: Sequence[RunResult]
    ) -> tuple[Path, RunResult | None]:
        """Source snapshot, the best seed's checkpoint and a JSON summary, in the champion's artifact folder.

        Nothing is retrained: the checkpoint is the one the run left. Returns the folder and, when the best run left
        none (e.g. an ``arena run`` keeps none), that run; ``champion.json`` says so."""
        folder = self.champion_dir(name, sha)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "variant.py").write_text(source, encoding="utf-8")
        ok = [r for r in results if r.status == "ok" and r.final_val_loss is not None]
        best = min(ok, key=lambda r: r.final_val_loss or math.inf, default=None)
        missing = None
        if best is not None:
            target = folder / f"seed{best.seed}.pt"
            try:
                if not (best.checkpoint_path and Path(best.checkpoint_path).exists()):
                    raise FileNotFoundError(best.checkpoint_path)
                shutil.copyfile(best.checkpoint_path, target)
            except OSError:  # none kept, or a full disk: the folder says it has none, nothing half-copied stays
                target.unlink(missing_ok=True)
                missing = best
        summary = {
            "spec_hash": self.spec.hash, "spec": self.spec.to_dict(), "name": name, "variant_sha": sha,
            "hparams": dict(hparams), "best_seed": best.seed if best else None,
            "best_val_loss": best.final_val_loss if best else None,
            "checkpoint": None if missing is not None or best is None else f"seed{best.seed}.pt",
        }
        (folder / "champion.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return folder, missing


def env_of(results: Any) -> dict[str, Any]:
    for r in results:
        return stack_key(r.env, r.backend) | {"git_commit": r.env.get("git_commit")}
    return {}


def json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj
