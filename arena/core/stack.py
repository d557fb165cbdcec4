"""Which runs may be paired or averaged together: the code and the stack a run used.

A run's ``Basis`` is the digest of arena's code that computed it and the id of the stack it ran on. Both are part of
the run's key (``arena.core.result.run_key``): a result computed by other code or on another stack is a different
run, so it is never reused, paired or averaged with this one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


def stack_id(info: dict[str, Any]) -> str:
    """A short id of a stack description (canonical JSON): equal ids, the same stack."""
    text = json.dumps(info, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Basis:
    """What a run is computed with, besides its variant, spec, seed and hyperparameters: ``code`` (digest of the
    model core, the stock fusions, the data pipeline and the loop) and ``stack`` (the id of ``info``: device, GPU
    model, torch and CUDA versions, determinism, backend and kernels, execution options)."""

    code: str
    stack: str
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @classmethod
    def of(cls, code: str, info: dict[str, Any]) -> Basis:
        return cls(code, stack_id(info), dict(info))

    @property
    def label(self) -> str:
        device = self.info.get("gpu") or self.info.get("device") or "?"
        return f"code {self.code[:8]} · stack {self.stack[:8]} ({device})"


def stack_key(env: dict[str, Any], backend: dict[str, str]) -> dict[str, Any]:
    """The software stack a run used (torch, CUDA, GPU, GPU determinism, execution options, backend per mixer), as
    recorded evidence. Runs from before ``execution`` was recorded used the foreach AdamW and pageable copies."""
    execution = env.get("execution")
    if env.get("gpu") and execution is None:
        execution = {"pinned_batches": False, "fused_adamw": False}
    return {"torch": env.get("torch"), "cuda": env.get("cuda"), "gpu": env.get("gpu"),
            "deterministic": env.get("deterministic"), "execution": execution, "backend": backend}


def same_stack(
    a_env: dict[str, Any], a_backend: dict[str, str], b_env: dict[str, Any], b_backend: dict[str, str]
) -> bool:
    """Whether two runs' recorded environments agree: the same torch, CUDA, GPU, determinism and execution options,
    and the same backend for every mixer both use (mixers only one side has cannot disagree)."""
    if stack_key(a_env, {}) != stack_key(b_env, {}):
        return False
    return all(a_backend[m] == b_backend[m] for m in a_backend.keys() & b_backend.keys())
