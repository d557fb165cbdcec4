"""Which runs may be paired or averaged together: the software stack a run used, as recorded in its ``env``."""

from __future__ import annotations

from typing import Any


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
    """Whether two runs may be paired: the same torch, CUDA, GPU, determinism and execution options, and the same
    backend for every mixer both use. Mixers only one side has cannot disagree: a GPT champion and a hybrid
    challenger share none."""
    if stack_key(a_env, {}) != stack_key(b_env, {}):
        return False
    return all(a_backend[m] == b_backend[m] for m in a_backend.keys() & b_backend.keys())
