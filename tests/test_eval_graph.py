"""``runner.eval_graph.Evaluator`` on the CPU: its eager path gives each member's own ``evaluate`` numbers for a plain
model and a pack, and a forward that cannot be captured leaves it evaluating eagerly with the same numbers. (The
replay itself needs CUDA: tests/gpu/test_pack_gpu.py checks it gives the eager bits.)"""

from __future__ import annotations

import pytest
import torch

from arena.core.spec import PRESETS
from arena.model.lm import HybridLM, build_model
from arena.model.pack import PackedLM
from arena.runner import eval_graph
from arena.runner.data import load_track
from arena.runner.eval_graph import Evaluator
from arena.runner.evaluate import evaluate
from arena.runner.loader import builtin

SMOKE = PRESETS["smoke"].derive(eval_batches=3)
CPU = torch.device("cpu")


def _models() -> tuple[list[HybridLM], PackedLM]:
    v = builtin("gf").variant
    members = [build_model(SMOKE.dims, v, None, seed=s, backend="torch_chunk") for s in (0, 1, 2)]
    return members, PackedLM(members)


def _each(members: list[HybridLM], batches: list) -> list[tuple[float, float | None]]:
    """The oracle: every member alone, on the plain model's own evaluation."""
    return [evaluate(m, batches, CPU, False) for m in members]


def test_the_evaluator_gives_evaluate_members_numbers_for_a_plain_model_and_a_pack() -> None:
    batches = load_track(SMOKE).val_batches(final=False)
    members, pack = _models()
    for model, k, want in ((members[0], 1, _each(members[:1], batches)), (pack, 3, _each(members, batches))):
        ev = Evaluator(model, CPU, autocast=False, graphs=True)  # no CUDA: eager whatever is asked
        assert not ev.graphs
        ev.stage("val", [batches] * k)
        got = ev("val")
        # The same sums in another order (per member in a batch, not one reduction), a pack's through vmap.
        assert [g[0] for g in got] == pytest.approx([w[0] for w in want], rel=1e-7)
        assert [g[1] for g in got] == pytest.approx([w[1] for w in want], rel=1e-7)
        assert (model.template if isinstance(model, PackedLM) else model).training  # left in training mode


def test_a_forward_that_cannot_be_captured_is_evaluated_eagerly(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object, **__: object) -> None:
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(eval_graph, "_Captured", refuse)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_a, **_k: None)
    batches = load_track(SMOKE).val_batches(final=False)
    members, pack = _models()
    ev = Evaluator(pack, CPU, autocast=False, graphs=False)
    ev.graphs = True  # as on CUDA in graph mode
    ev.stage("val", [batches] * 3)
    first = ev("val")
    assert not ev.graphs and not ev.captured  # the capture failed: eager from then on
    assert ev("val") == first
    assert [f[0] for f in first] == pytest.approx([w[0] for w in _each(members, batches)], rel=1e-7)
