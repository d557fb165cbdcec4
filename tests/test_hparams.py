"""Typed hyperparameters: one merge of defaults, range checks, and no silent fallback for an undeclared name."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from arena.api import GatedFusion, HParam, HParams, gate_init, lr_mult
from arena.core.errors import ArenaError
from arena.core.hparams import UndeclaredHParam, resolve

DECLARED = {"gate_init": gate_init(0.3), "lr_mult": lr_mult()}


def test_resolve_merges_defaults_once_and_freezes() -> None:
    hp = resolve(DECLARED, {"lr_mult": 2.0}, "gf_mh")
    assert hp.to_dict() == {"gate_init": 0.3, "lr_mult": 2.0}
    assert hp.gate_init == 0.3 and hp["lr_mult"] == 2.0 and "gate_init" in hp and len(hp) == 2
    with pytest.raises(AttributeError):
        hp.gate_init = 0.5  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(hp)) == hp  # crosses the spawn boundary to the worker


def test_resolve_refuses_unknown_names_and_values_outside_the_range() -> None:
    with pytest.raises(ArenaError, match="gf_mh has no hyperparameter 'gate_int' \\(did you mean 'gate_init'\\?\\)"):
        resolve(DECLARED, {"gate_int": 0.3}, "gf_mh")
    for bad in (7.0, 0.0, float("nan")):
        with pytest.raises(ArenaError, match="outside its declared range"):
            resolve(DECLARED, {"gate_init": bad}, "gf_mh")


def test_reading_an_undeclared_name_raises_even_through_get() -> None:
    hp = resolve(DECLARED, None, "gf")
    for read in (lambda: hp["gate_int"], lambda: hp.gate_int, lambda: hp.get("gate_int", 0.5)):
        with pytest.raises(UndeclaredHParam, match=r"gf reads hyperparameter 'gate_int'.*did you mean 'gate_init'"):
            read()


def test_the_stock_fusion_has_no_fallback() -> None:
    with pytest.raises(UndeclaredHParam, match="'gate_init'"):
        GatedFusion(8, HParams({"lr_mult": 1.0}, "nogate"))
    fusion = GatedFusion(8, resolve(DECLARED, None, "gf_mh"))
    assert torch.sigmoid(fusion.gate.bias).allclose(torch.full((8,), 0.3))


def test_hparam_ranges_are_checked() -> None:
    assert HParam(0.0, 1.0, 0.5).problems("x") == []
    assert HParam(1.0, 0.0, 0.5).problems("x")
    assert HParam(0.0, 1.0, True).problems("x")  # a bool is no number


TYPO = '''"""typo: a fusion that misspells the hyperparameter it reads."""

import torch
from torch import nn

from arena.api import Fusion, HParams, Variant, gate_init, logit, lr_mult


class Typo(Fusion):
    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__(d_model, hp)
        self.s = nn.Parameter(torch.tensor(logit(hp.get("gate_int", 0.5))))  # the typo

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.s)
        return a * rwkv + (1 - a) * mamba


VARIANT = Variant(name="typo", kind="fusion", summary="misspells gate_init", fusion=Typo,
                  hparams={"gate_init": gate_init(), "lr_mult": lr_mult()})
'''


def test_a_misspelled_name_in_a_fusion_fails_at_load_with_one_line(tmp_path: Path) -> None:
    from arena.core.spec import PRESETS
    from arena.runner.check import check_variant
    from arena.runner.loader import load_variant

    path = tmp_path / "typo.py"
    path.write_text(TYPO, encoding="utf-8")
    with pytest.raises(ArenaError) as info:
        check_variant(load_variant(path), PRESETS["smoke"])
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "reads hyperparameter 'gate_int'" in message and "did you mean 'gate_init'" in message
