"""What one trial (variant × spec × seed × hyperparameters) returns. Failures are results too."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

# pruned: stopped early by the search (Optuna) on purpose; never counted on the leaderboard.
# rejected: the variant broke the rules while it ran (a causality leak, a patched function, hidden state, a reported
# loss that a clean process does not reproduce); a loss like any failure, with the reason in ``error``.
Status = Literal["ok", "diverged", "timeout", "crashed", "pruned", "rejected"]
STATUSES: tuple[str, ...] = ("ok", "diverged", "timeout", "crashed", "pruned", "rejected")


def hparams_key(hparams: dict[str, float]) -> str:
    """Canonical text of a hyperparameter set (part of a run's identity)."""
    return json.dumps({k: round(float(v), 12) for k, v in sorted(hparams.items())}, separators=(",", ":"))


def run_key(variant_sha: str, spec_hash: str, seed: int, hparams: dict[str, float], code: str, stack: str) -> str:
    """The identity of a run: (variant source sha256, spec hash, seed, hyperparameters, digest of arena's code that
    computed it, the stack it ran on) → a short hex key. A change to the model core, the stock fusions, the data
    pipeline or the loop changes ``code``; another device, GPU model, torch, determinism, backend or execution changes
    ``stack`` (``arena.core.stack``): either way the stored run is not this run, and is never reused for it."""
    text = f"{variant_sha}|{spec_hash}|{seed}|{hparams_key(hparams)}|{code}|{stack}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class RunResult:
    """One trial's outcome. ``final_val_loss`` (nats per token; per char on char tracks) is the primary metric."""

    variant: str
    variant_sha: str
    spec_hash: str
    seed: int
    hparams: dict[str, float]
    status: Status = "ok"
    error: str | None = None
    final_val_loss: float | None = None
    final_val_bpc: float | None = None  # bits per char (= loss / ln 2)
    final_val_acc: float | None = None  # mqar: accuracy on query positions
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    train_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, train loss)
    diagnostics: list[dict[str, Any]] = field(default_factory=list)  # per eval: step, gate mean/std per layer, ...
    tokens_per_s: float | None = None  # steady state: warm-up and compilation excluded
    warmup_s: float | None = None  # time of the first (compiling/warming) steps, reported separately
    wall_s: float | None = None
    peak_mem_mb: float | None = None
    params_total: int | None = None
    params_by_part: dict[str, int] = field(default_factory=dict)
    backend: dict[str, str] = field(default_factory=dict)  # e.g. {"rwkv6": "kernel", "mamba2": "torch_chunk"}
    env: dict[str, Any] = field(default_factory=dict)
    steps_done: int = 0
    checkpoint_path: str | None = None
    params_target: int | None = None  # the spec's reference count every entry is matched to (None: unmatched)
    code_digest: str = ""  # arena's code that computed the run (runner.provenance.code_digest)
    stack_id: str = ""  # the stack it ran on (arena.core.stack.stack_id)

    @property
    def key(self) -> str:
        return run_key(self.variant_sha, self.spec_hash, self.seed, self.hparams, self.code_digest, self.stack_id)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        known = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        for curve in ("val_curve", "train_curve"):
            if curve in d:
                d[curve] = [tuple(p) for p in d[curve]]
        return cls(**d)
