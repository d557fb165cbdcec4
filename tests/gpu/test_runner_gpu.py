"""The runner on CUDA: deterministic kernels, and the CUDA-graph step against the eager step.

Skipped without CUDA or the kernel packages. The bench (bench/gpu_bench.py) measures the same at the full `phase2`
length; these are short so that they fit in one device call next to the kernel tests.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from arena.core.options import RunOptions
from arena.core.spec import PRESETS, ModelDims
from arena.model import backend
from arena.model.mamba2 import Mamba2Mixer
from arena.runner.loader import builtin
from arena.runner.repeat import differing_grads
from arena.runner.train import train

pytestmark = pytest.mark.gpu

SHORT = PRESETS["phase2"].derive(steps=60, warmup_steps=10, eval_every=30)


def _need_kernels() -> None:
    for name, kernel in (("fla", backend.fla_chunk_rwkv6()), ("mamba_ssm", backend.mamba_chunk_scan_combined())):
        if isinstance(kernel, str):
            pytest.skip(f"{name} does not import: {kernel}")


def _grads(m: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    m.zero_grad(set_to_none=True)
    (m(x) * g).sum().backward()
    return {n: p.grad.detach().clone() for n, p in m.named_parameters() if p.grad is not None}


def test_mamba_layer_backward_is_bitwise_repeatable() -> None:
    """Deterministic mode (the default): the same backward twice gives the same bits for every parameter."""
    _need_kernels()
    assert backend.deterministic()
    torch.manual_seed(0)
    m = Mamba2Mixer(ModelDims(), backend="kernel").cuda()
    x = torch.randn(64, 64, m.d_model, device="cuda")  # (B, T, D): the phase2 batch
    g = torch.randn_like(x)
    first = _grads(m, x, g)
    for _ in range(3):
        again = _grads(m, x, g)
        diff = {n: (again[n] - first[n]).abs().max().item() for n in first}
        assert all(v == 0.0 for v in diff.values()), diff


def _run(mode: str) -> Any:
    # The corpus comes from ARENA_DATA or the cache, as for any run (the device call sets ARENA_DATA).
    return train(SHORT, builtin("gf"), 0, options=RunOptions(device="cuda", backend="auto", mode=mode))


def test_graph_twice_is_repeatable_and_matches_eager() -> None:
    """gf, 60 steps at phase2: graph twice within 1e-4 relative (bitwise in practice), eager within 1e-3."""
    _need_kernels()
    graph1, graph2, eager = _run("graph"), _run("graph"), _run("eager")
    for r in (graph1, graph2, eager):
        assert r.status == "ok", r.error
        assert r.backend["rwkv6"] == "kernel" and r.backend["mamba2"].startswith("kernel")
        assert r.env["deterministic"] is True
    assert graph1.final_val_loss is not None and graph2.final_val_loss is not None and eager.final_val_loss is not None
    repeat = abs(graph1.final_val_loss - graph2.final_val_loss) / graph1.final_val_loss
    vs_eager = abs(graph1.final_val_loss - eager.final_val_loss) / eager.final_val_loss
    print(f"graph twice: rel {repeat:.2e}; graph vs eager: rel {vs_eager:.2e}")
    assert repeat <= 1e-4
    assert vs_eager <= 1e-3


def test_model_backward_is_bitwise_repeatable() -> None:
    """The whole gf model, one phase2 batch: every gradient bit for bit equal (the embedding's included)."""
    _need_kernels()
    from arena.model.lm import build_model

    backend.prepare_cuda()
    model = build_model(SHORT.dims, builtin("gf").variant, seed=0).cuda()
    idx = torch.randint(0, SHORT.dims.vocab_size, (64, 65), device="cuda", generator=torch.Generator("cuda"))
    x, y = idx[:, :-1], idx[:, 1:]  # (B, T) each
    differ, worst = differing_grads(model, x, y)
    assert not differ, (differ, worst)


def test_a_fresh_process_repeats_the_run() -> None:
    """As tournaments run trials: the same run in two new processes within 1e-4 (here with the test folder's pinned
    FLA configs in every process; the bench checks the same with the tuned configs loaded from disk)."""
    _need_kernels()
    import json
    import subprocess
    import sys
    from pathlib import Path

    pin = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import pin_configs; pin_configs.install(); "
    code = (
        pin
        + "import json; from arena.core.spec import PRESETS; from arena.runner.train import train; "
        "from arena.runner.loader import builtin; from arena.core.options import RunOptions; "
        "s = PRESETS['phase2'].derive(steps=60, warmup_steps=10, eval_every=30); "
        "r = train(s, builtin('gf'), 0, options=RunOptions(device='cuda', mode='graph')); "
        "print(json.dumps(r.final_val_loss))"
    )
    losses = [json.loads(subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, check=True,
                                        timeout=600).stdout.strip().splitlines()[-1]) for _ in range(2)]
    in_process = _run("graph").final_val_loss
    print(f"fresh processes: {losses}, this process: {in_process}")
    assert abs(losses[0] - losses[1]) / losses[0] <= 1e-4
    assert abs(losses[0] - in_process) / in_process <= 1e-4
