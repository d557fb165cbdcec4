"""The defences one by one, below the CLI: the static policy, the causality checks, the tamper check, the audit
of trained values (tests/test_security.py drives hostile files through the commands)."""

from __future__ import annotations

import pytest
import torch

from arena.core.errors import ArenaError
from arena.core.spec import PRESETS
from arena.model.lm import build_model
from arena.runner import causality, guard
from arena.runner.check import Violation, audit_model
from arena.runner.loader import builtin
from arena.runner.policy import audit_source

SMOKE = PRESETS["smoke"]


@pytest.mark.parametrize(("line", "rule"), [
    ("import os", "imports 'os'"),
    ("from arena.runner import data", "imports 'arena.runner'"),
    ("import torch.nn.functional as F\nF.cross_entropy = None", "assigns into the imported module 'F'"),
    ("import torch\nT = torch.Tensor\nT.mean = None", "sets an attribute of something other than self"),
    ("import torch\nx = torch.os", "uses 'os'"),
    ("x = getattr(object, 'y')", "uses 'getattr'"),
    ("x = (1).__class__", "dunder"),
    ("s = 'a__b'", "'__'"),
    ("import torch\ntorch.manual_seed(0)", "manual_seed"),
    ("import torch\nwith torch.no_grad():\n    pass", "no_grad"),
    ("import torch\ny = torch.zeros(1).detach()", ".detach()"),
    ("def f():\n    global g", "global"),
    ("try:\n    pass\nexcept BaseException:\n    pass", "BaseException"),
    ("import torch\nclass T(torch.Tensor):\n    pass", "subclasses torch.Tensor"),
])
def test_policy_refuses_with_the_line_and_the_rule(line: str, rule: str) -> None:
    with pytest.raises(ArenaError) as info:
        audit_source(line + "\n", "v.py")
    assert str(info.value).startswith("v.py:") and rule in str(info.value)


def test_policy_passes_every_shipped_file_and_the_last_share_detach() -> None:
    for name in ("gf", "cp", "ws", "gru_arbiter", "hy", "rf", "gpt"):
        lv = builtin(name)
        audit_source(lv.source, lv.path)
    audit_source("class A:\n    def forward(self, g):\n        self.last_share = g.detach().mean()\n", "ok.py")


def _model() -> torch.nn.Module:
    return build_model(SMOKE.dims, builtin("gf").variant, seed=0, backend="torch_chunk")


def test_gradient_check_is_exactly_zero_for_a_causal_model_and_sees_a_roll() -> None:
    model = _model()
    x = torch.randint(0, SMOKE.dims.vocab_size, (4, 16))
    embeddings, logits = model.embed_forward(x)
    assert not causality.gradient_leak(embeddings, logits, 7).leaks
    rolled = logits + torch.roll(logits, -1, dims=1)  # position t sees t + 1
    leak = causality.gradient_leak(embeddings, rolled, 7)
    assert leak.leaks and leak.position == 8 and "position 8" in leak.describe()


def test_paired_rows_see_a_leak_the_gradient_cannot() -> None:
    model = _model()
    x = torch.randint(0, SMOKE.dims.vocab_size, (4, 16))
    other = (x + 1) % SMOKE.dims.vocab_size  # every later token differs
    assert not causality.perturbation_leak(model, x, other, 5).leaks

    class Peek(torch.nn.Module):  # adds a gradient-free function of the next token
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return self.inner(idx) + torch.roll(idx, -1, 1).unsqueeze(-1).float()  # the next token's id

    assert causality.perturbation_leak(Peek(model), x, other, 5).leaks  # type: ignore[arg-type]


def test_tamper_check_names_the_patched_function(monkeypatch: pytest.MonkeyPatch) -> None:
    guard.prime()
    before = guard.snapshot()
    assert guard.tampered(before, guard.snapshot()) == []
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: 0)
    monkeypatch.setattr(torch.Tensor, "mean", lambda self: 0)
    assert guard.tampered(before, guard.snapshot()) == ["torch.Tensor.mean", "torch.nn.functional.cross_entropy"]
    with pytest.raises(ArenaError, match=r"patched torch\.Tensor\.mean"):
        guard.check_untampered(before, "in a test")


def test_audit_refuses_new_parameters_and_hidden_tensors() -> None:
    model = _model()
    expected = {id(p) for p in model.parameters()}
    audit_model(model, expected, "at build")
    fusion = model.blocks[0].fusion
    fusion.hidden = [torch.zeros(3, requires_grad=True)]  # a plain list: invisible to the optimizer and the budget
    with pytest.raises(Violation, match="keeps tensors in 'hidden'"):
        audit_model(model, expected, "after a step")
    del fusion.hidden
    fusion.extra = torch.nn.Parameter(torch.zeros(3))  # created after the build
    with pytest.raises(Violation, match="1 added"):
        audit_model(model, expected, "after a step")


def test_audit_hook_refuses_io_while_variant_code_runs(tmp_path: object) -> None:
    import subprocess

    with guard.variant_code(), pytest.raises(PermissionError, match=r"subprocess\.Popen"):
        subprocess.run(["true"], check=False)
    with guard.variant_code(), pytest.raises(PermissionError, match="may not open"):
        open("/etc/hostname")  # noqa: SIM115
    subprocess.run(["true"], check=True)  # outside variant code the hook lets arena work
