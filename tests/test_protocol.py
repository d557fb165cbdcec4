"""The protocol's fixed points, pinned by exact values: the LR schedule, the optimizer groups (weight decay by role,
lr_mult on the Mamba group only), gate_init → the initial share, shared parts identical across variants at a
seed, the pathways passed by name, the amplitude share and the movement diagnostics, and ``arena show``'s
warnings. Each test fails if the behaviour it names changes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from rich.console import Console
from torch import nn

from arena.core.diagnosis import MIN_MOVED, MIN_SHARE, hparam_group, warnings
from arena.core.errors import ArenaError
from arena.core.hparams import HParams
from arena.core.options import RunOptions
from arena.core.result import RunResult
from arena.core.spec import Spec, preset
from arena.core.variant import Fusion, Variant, logit
from arena.model.attribution import amplitude
from arena.model.lm import Block, HybridLM, build_model
from arena.runner.evaluate import diagnostics, movement, snapshot
from arena.runner.loader import builtin, load_source
from arena.runner.optim import decayed, lr_at, make_optimizer
from arena.runner.train import train

SMOKE = preset("smoke")
HYBRIDS = ("gf", "gf_mh", "gf_rh", "cp", "hy", "ws", "rf", "gru_arbiter")


def model(variant: str | Variant, hparams: dict[str, float] | None = None, *, seed: int = 0,
          spec: Spec = SMOKE) -> HybridLM:
    """A shipped variant (by name) or a declaration, built at the spec's dims and the standard FFN width."""
    v = builtin(variant).variant if isinstance(variant, str) else variant
    assert isinstance(v, Variant)
    return build_model(spec.dims, v, hparams, seed=seed)


def tokens(spec: Spec = SMOKE, shape: tuple[int, int] = (2, 32), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, spec.dims.vocab_size, shape, generator=torch.Generator().manual_seed(seed))  # (B, T)


def probe(m: HybridLM, x: torch.Tensor) -> dict[str, object]:
    return diagnostics(m, 0, [(x, x)], torch.device("cpu"), autocast=False)


# -- the learning-rate schedule ---------------------------------------------------------------------------------
def test_lr_schedule_phase2_exact_values() -> None:
    spec = preset("phase2")
    assert (spec.lr, spec.warmup_steps, spec.steps, spec.min_lr_ratio, spec.lr_schedule) == (3e-4, 100, 500, 0.1,
                                                                                               "cosine")
    # Linear warm-up: (step + 1) / warmup, reaching 1.0 on the last warm-up step.
    assert [lr_at(spec, s) for s in (0, 1, 49, 98, 99)] == [0.01, 0.02, 0.5, 0.99, 1.0]
    # Cosine from 1.0 at the end of the warm-up to min_lr_ratio at the last step, then held there.
    assert lr_at(spec, 100) == 1.0
    assert lr_at(spec, 300) == pytest.approx(0.55, abs=1e-15)  # half-way: (1 + 0.1) / 2
    assert lr_at(spec, 200) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), abs=1e-15)
    assert lr_at(spec, 499) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 399 / 400)), abs=1e-15)
    assert lr_at(spec, 500) == 0.1 and lr_at(spec, 10_000) == 0.1
    # Σ lr over the run: how far Adam (about lr a step) can move any parameter — 0.081 at phase2.
    assert spec.lr * sum(lr_at(spec, s) for s in range(spec.steps)) == pytest.approx(3e-4 * 270.95, rel=1e-12)


def test_lr_schedule_constant_and_without_warmup() -> None:
    const = preset("phase2").derive(lr_schedule="constant")
    assert [lr_at(const, s) for s in (0, 99, 100, 499, 500)] == [0.01, 1.0, 1.0, 1.0, 1.0]
    no_warm = preset("phase2").derive(warmup_steps=0)
    assert lr_at(no_warm, 0) == 1.0 and lr_at(no_warm, 250) == pytest.approx(0.55, abs=1e-15)
    assert lr_at(no_warm, 500) == 0.1
    smoke = preset("smoke")  # 40 steps, 8 warm-up
    assert [lr_at(smoke, s) for s in (0, 7, 8, 24, 40)] == pytest.approx([0.125, 1.0, 1.0, 0.55, 0.1], abs=1e-15)


# -- the optimizer groups ---------------------------------------------------------------------------------------
# Per parameter (layers pooled), which get weight decay in a gf model: the weight matrices of linear maps, and
# none of RWKV's time-mix parameters (x_bias and bonus are matrices: a rank rule decayed them).
GF_DECAYED = {
    "ffn/0.weight", "ffn/2.weight", "fusion/gate.weight",
    "mamba2/in_proj.weight", "mamba2/out_proj.weight",
    "rwkv6/r_proj.linear.weight", "rwkv6/k_proj.linear.weight", "rwkv6/v_proj.linear.weight",
    "rwkv6/g_proj.linear.weight", "rwkv6/o_proj.weight",
}
GF_NOT_DECAYED = {
    "embed/weight", "norm/norm1.weight", "norm/norm2.weight", "norm/norm_f.weight", "fusion/gate.bias",
    "mamba2/A_log", "mamba2/D", "mamba2/dt_bias", "mamba2/conv1d.weight", "mamba2/conv1d.bias", "mamba2/norm.weight",
    "rwkv6/x_bias", "rwkv6/bonus", "rwkv6/x_proj.0.mu", "rwkv6/x_proj.0.linear.weight", "rwkv6/x_proj.2.weight",
    "rwkv6/w_proj.linear.lora.0.weight", "rwkv6/w_proj.linear.lora.2.weight", "rwkv6/w_proj.linear.lora.2.bias",
    "rwkv6/g_norm.weight", "rwkv6/g_norm.bias",
}


def decay_and_lr(m: HybridLM, lr_mult: float) -> dict[str, tuple[float, float]]:
    """Per parameter group (``group_of``), the (weight decay, lr) its optimizer group gives it."""
    opt = make_optimizer(m, SMOKE, lr_mult, capturable=False)
    names = {id(p): n for n, p in m.named_parameters()}
    out: dict[str, tuple[float, float]] = {}
    for group in opt.param_groups:
        for p in group["params"]:
            key = m.group_of(names[id(p)])
            setting = (group["weight_decay"], group["lr"])
            assert out.setdefault(key, setting) == setting, f"{key} is split over two settings"
    return out


def test_weight_decay_by_role_and_lr_mult_on_the_mamba_group_only() -> None:
    m = model("gf")
    groups = decay_and_lr(m, lr_mult=2.5)
    assert set(groups) == GF_DECAYED | GF_NOT_DECAYED
    for key, (wd, lr) in groups.items():
        assert wd == (SMOKE.weight_decay if key in GF_DECAYED else 0.0), key
        assert lr == pytest.approx(SMOKE.lr * (2.5 if key.startswith("mamba2/") else 1.0), rel=1e-15), key
    # Per layer: RWKV r, k, v, g, o 4,096; Mamba in/out 7,296; the gate 1,024; the FFN 8,192 — two layers.
    assert sum(p.numel() for n, p in m.named_parameters() if n in decayed(m)) == 2 * 20_608


@pytest.mark.parametrize(("name", "fusion_decayed"), [
    ("cp", {"fusion/proj.weight"}),
    ("gru_arbiter", {"fusion/gru.weight_ih_l0", "fusion/gru.weight_hh_l0", "fusion/head.weight"}),
    ("hy", set()), ("ws", set()), ("rf", set()),
])
def test_a_fusions_linear_maps_decay_and_nothing_else(name: str, fusion_decayed: set[str]) -> None:
    m = model(name)
    got = {m.group_of(n) for n in decayed(m)}
    assert {g for g in got if g.startswith("fusion/")} == fusion_decayed
    assert {g for g in got if not g.startswith("fusion/")} == GF_DECAYED - {"fusion/gate.weight"}


def test_attention_baseline_groups() -> None:
    m = model("gpt")
    assert {m.group_of(n) for n in decayed(m)} == {"attention/qkv.weight", "attention/o_proj.weight",
                                                    "ffn/0.weight", "ffn/2.weight"}
    assert {lr for _, lr in decay_and_lr(m, lr_mult=3.0).values()} == {SMOKE.lr}  # no Mamba group: no lr_mult


def test_a_fusion_submodule_named_like_a_mixer_stays_in_the_fusion() -> None:
    class Sneaky(Fusion):
        def __init__(self, d_model: int, hp: HParams) -> None:
            super().__init__(d_model, hp)
            self.mixers = nn.ModuleDict({"mamba2": nn.Linear(d_model, d_model)})

        def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            return rwkv + self.mixers["mamba2"](mamba)  # (B, T, D)

    m = model(Variant(name="sneaky", kind="fusion", summary="s", fusion=Sneaky,
                      hparams=dict(builtin("cp").variant.hparams)))
    assert m.part_of("blocks.0.fusion.mixers.mamba2.weight") == "fusion"  # no lr_mult, no Mamba parameter count
    assert m.part_of("blocks.0.mixers.mamba2.A_log") == "mamba2" and m.part_of("blocks.1.norm1.weight") == "norm"


# -- gate_init → the initial share ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gf", "gf_mh", "gf_rh", "ws", "gru_arbiter"])
@pytest.mark.parametrize("gate_init", [0.3, 0.5, 0.8])
def test_gate_init_is_every_positions_initial_share(name: str, gate_init: float) -> None:
    m = model(name, {"gate_init": gate_init})
    m(tokens())  # every forward sets the fusion's last_share
    for block in m.blocks:
        assert isinstance(block, Block) and block.fusion is not None
        share = block.fusion.last_share
        assert share is not None
        assert torch.equal(share, torch.full_like(share, gate_init)), (name, gate_init)  # float32 of gate_init
    # gate_stats reduces in float32: its mean and std carry the sum's rounding (≈ 1e-7), the share itself none.
    assert all(g == {"mean": pytest.approx(gate_init, abs=1e-6), "std": pytest.approx(0.0, abs=1e-6)}
               for g in m.gate_stats())


def test_shipped_defaults_set_the_initial_shares() -> None:
    expected = {"gf": 0.5, "gf_mh": 0.3, "gf_rh": 0.7, "ws": 0.5, "gru_arbiter": 0.5, "hy": 0.5, "rf": 1 / 1.1}
    for name, share in expected.items():
        m = model(name)
        m(tokens())
        assert [g["mean"] for g in m.gate_stats()] == pytest.approx([share] * SMOKE.dims.n_layer, abs=1e-6), name
    assert logit(0.3) == pytest.approx(math.log(0.3 / 0.7), rel=1e-15)


# -- shared parts are identical across variants at one seed -----------------------------------------------------
def test_shared_parts_start_identical_in_every_variant() -> None:
    dims = dataclasses.replace(SMOKE.dims, n_layer=4)
    spec = dataclasses.replace(SMOKE, dims=dims)
    models = {n: model(n, seed=3, spec=spec) for n in ("gf", "cp", "hy", "gru_arbiter", "rwkv6_only",
                                                       "mamba2_only", "gpt")}
    states = {n: m.state_dict() for n, m in models.items()}
    rwkv = [k for k in states["gf"] if k.startswith("blocks.3.mixers.rwkv6.")]
    mamba = [k for k in states["gf"] if k.startswith("blocks.3.mixers.mamba2.")]
    assert len(rwkv) == 15 and len(mamba) == 8
    for name in ("cp", "hy", "gru_arbiter", "rwkv6_only"):
        assert all(torch.equal(states[name][k], states["gf"][k]) for k in rwkv), name
    for name in ("cp", "hy", "gru_arbiter", "mamba2_only"):
        assert all(torch.equal(states[name][k], states["gf"][k]) for k in mamba), name
    shared = ["embed.weight", "blocks.3.ffn.0.weight", "blocks.3.ffn.2.weight", "blocks.0.norm1.weight"]
    for name in models:  # at the standard FFN width the FFN is shared too
        assert all(torch.equal(states[name][k], states["gf"][k]) for k in shared), name
    other_seed = model("gf", seed=4, spec=spec).state_dict()
    assert not torch.equal(other_seed[rwkv[-1]], states["gf"][rwkv[-1]])  # the seed does change them
    assert not torch.equal(states["gf"]["blocks.3.mixers.rwkv6.o_proj.weight"],
                           states["gf"]["blocks.2.mixers.rwkv6.o_proj.weight"])  # each layer its own stream


# -- the pathways are passed by name ----------------------------------------------------------------------------
def reordered(name: str) -> Variant:
    v = builtin(name).variant
    assert isinstance(v, Variant) and v.mixers == ("rwkv6", "mamba2")
    return dataclasses.replace(v, mixers=("mamba2", "rwkv6"))


@pytest.mark.parametrize("name", ["rf", "gf_mh", "cp"])
def test_mixers_in_the_other_order_build_the_same_model(name: str) -> None:
    x = tokens()
    usual, swapped = model(name), model(reordered(name))
    assert [n for n, _ in usual.named_parameters()] == [n for n, _ in swapped.named_parameters()]
    assert torch.equal(usual(x), swapped(x))  # (B, T, V)


def test_the_fusion_receives_each_pathway_under_its_name() -> None:
    class Record(Fusion):
        seen: dict[str, torch.Tensor]

        def forward(self, mamba: torch.Tensor, x: torch.Tensor, rwkv: torch.Tensor) -> torch.Tensor:  # other order
            self.seen = {"rwkv": rwkv, "mamba": mamba, "x": x}
            return rwkv + mamba  # (B, T, D)

    for mixers in (("rwkv6", "mamba2"), ("mamba2", "rwkv6")):
        v = Variant(name="rec", kind="fusion", summary="s", fusion=Record, mixers=mixers,
                    hparams=dict(builtin("cp").variant.hparams))
        m = model(v)
        block = m.blocks[0]
        assert isinstance(block, Block) and isinstance(block.fusion, Record)
        outs: dict[str, torch.Tensor] = {}
        for key in ("rwkv6", "mamba2"):
            block.mixers[key].register_forward_hook(lambda _m, _i, o, key=key, outs=outs: outs.__setitem__(key, o))
        m(tokens())
        assert block.fusion.seen["rwkv"] is outs["rwkv6"] and block.fusion.seen["mamba"] is outs["mamba2"]


FILE = """\
import torch

from arena.api import Fusion, GatedFusion, Variant, gate_init, lr_mult


class F(Fusion):
    def forward(self, a, b, x):
        return a + b

"""


def test_the_loader_refuses_other_hybrids_and_other_forward_names() -> None:
    with pytest.raises(ArenaError, match=r"f\.py: the fusion's forward is called by name: .*forward\(self, rwkv, "):
        load_source(FILE + 'VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=F, '
                    'hparams={"lr_mult": lr_mult()})\n', "f.py")
    with pytest.raises(ArenaError, match="a hybrid runs exactly rwkv6 and mamba2"):
        load_source(FILE + 'VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                    'mixers=("rwkv6", "attention"), hparams={"lr_mult": lr_mult()})\n', "f.py")
    ok = load_source(FILE + 'VARIANT = Variant(name="x", kind="fusion", summary="s", fusion=GatedFusion, '
                     'mixers=("mamba2", "rwkv6"), hparams={"gate_init": gate_init(), "lr_mult": lr_mult()})\n',
                     "f.py")
    assert ok.variant.mixers == ("mamba2", "rwkv6")


# -- the amplitude share ----------------------------------------------------------------------------------------
class Affine(Fusion):
    """y = 0.25·rwkv + 0.75·mamba + 5: linear, with a constant that belongs to neither pathway."""

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.last_share = rwkv.mean().reshape(1)  # depends on the input: the ablations must not overwrite it
        return 0.25 * rwkv + 0.75 * mamba + 5.0  # (B, T, D)


class Product(Fusion):
    """y = rwkv ⊙ mamba: all interaction, split evenly."""

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return rwkv * mamba  # (B, T, D)


def test_amplitude_share_known_values() -> None:
    hp = HParams({})
    r, m, x = torch.full((2, 3, 4), 1.0), torch.full((2, 3, 4), 3.0), torch.zeros(2, 3, 4)  # (B, T, D) each
    affine = Affine(4, hp)
    affine(rwkv=r, mamba=m, x=x)
    got = amplitude(affine, r, m, x)
    assert got == {"rwkv": 0.25, "mamba": 2.25, "share": 0.1, "interaction": 0.0}
    assert affine.last_share is not None and float(affine.last_share) == 1.0  # the real forward's, kept
    r2 = torch.full((2, 3, 4), 2.0)
    assert amplitude(Product(4, hp), r2, m, x) == {"rwkv": 3.0, "mamba": 3.0, "share": 0.5, "interaction": 6.0}
    zero = torch.zeros(2, 3, 4)
    assert amplitude(Product(4, hp), zero, zero, x)["share"] is None  # nothing to share

    class Picky(Affine):
        def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            if not bool(rwkv.any()):
                raise ValueError("no zeros here")
            return super().forward(rwkv, mamba, x)  # (B, T, D)

    picky = Picky(4, hp)
    picky(rwkv=r, mamba=m, x=x)
    assert amplitude(picky, r, m, x) == dict.fromkeys(("rwkv", "mamba", "share", "interaction"))  # the run goes on
    assert picky.last_share is not None and float(picky.last_share) == 1.0


def test_amplitude_share_at_init_is_the_gate_weighted_rms() -> None:
    """For gf's linear mix the share is g·RMS(rwkv) / (g·RMS(rwkv) + (1−g)·RMS(mamba)); at smoke, seed 0, FLA's
    RWKV init, the RWKV output is ~40× smaller than Mamba's: 2.4% for gf, not 50%."""
    x = tokens(shape=(4, 64))
    for gate, name in ((0.5, "gf"), (0.3, "gf_mh"), (0.7, "gf_rh"), (0.5, "ws"), (0.5, "hy"), (0.5, "gru_arbiter")):
        d = probe(model(name), x)
        amp, norms = d["amplitude"], d["pathway_norms"]  # layer 1's pathways read layer 0's fused output
        assert isinstance(amp, list) and isinstance(norms, list) and len(amp) == SMOKE.dims.n_layer
        for layer, a in zip(norms, amp, strict=True):
            expect = gate * layer["rwkv6"] / (gate * layer["rwkv6"] + (1 - gate) * layer["mamba2"])
            assert a["share"] == pytest.approx(expect, rel=1e-5), name
            assert a["interaction"] < 1e-6
    shares = [a["share"] for a in probe(model("gf"), x)["amplitude"]]  # type: ignore[union-attr]
    assert shares == pytest.approx([0.0245, 0.0242], abs=5e-5)
    d = probe(model("rf"), x)
    rf = [a["share"] for a in d["amplitude"]]  # type: ignore[union-attr]
    norms = d["pathway_norms"]  # type: ignore[assignment]
    assert rf == pytest.approx([n["rwkv6"] / (n["rwkv6"] + 0.1 * n["mamba2"]) for n in norms], rel=1e-5)
    assert rf == pytest.approx([0.2005, 0.1970], abs=5e-5)  # rf: y = rwkv + 0.1·mamba, so 20%, not the nominal 91%
    assert all(g == {} for g in probe(model("rwkv6_only"), x)["amplitude"])  # type: ignore[union-attr]


# -- how far each parameter group moved -------------------------------------------------------------------------
def test_movement_is_zero_at_the_start_and_exact_after_a_known_change() -> None:
    m = model("gf_mh")
    start = snapshot(m)
    moved = movement(m, start)[0]
    assert {"all", "rwkv6", "mamba2", "fusion", "ffn", "embed", "norm", "fusion/gate.bias", "rwkv6/bonus"} <= set(moved)
    assert all(v["rms"] == 0.0 and v["rel"] in (0.0, None) for v in moved.values())
    assert moved["fusion/gate.weight"]["rel"] is None  # starts at zero: no size to be relative to
    assert moved["fusion/gate.bias"]["rel"] == 0.0 and moved["rwkv6"]["rel"] == 0.0
    with torch.no_grad():
        for block in m.blocks:
            assert isinstance(block, Block) and isinstance(block.fusion, nn.Module)
            block.fusion.gate.bias.add_(0.1)  # every channel of every layer: logit(0.3) → logit(0.3) + 0.1
    moved = movement(m, start)[0]
    assert moved["fusion/gate.bias"]["rms"] == pytest.approx(0.1, rel=1e-6)
    assert moved["fusion/gate.bias"]["rel"] == pytest.approx(0.1 / abs(logit(0.3)), rel=1e-6)
    assert moved["fusion"]["rel"] == pytest.approx(0.1 / abs(logit(0.3)), rel=1e-6)  # the weight is still 0
    assert moved["fusion"]["rms"] == pytest.approx(0.1 / math.sqrt(SMOKE.dims.d_model + 1), rel=1e-6)
    assert moved["mamba2"] == {"rel": 0.0, "rms": 0.0} and moved["fusion/gate.weight"] == {"rel": None, "rms": 0.0}


def test_a_run_records_amplitude_movement_and_lr_sum_at_each_eval(tiny_spec: Spec) -> None:
    r = train(tiny_spec, builtin("gf"), 0, options=RunOptions(device="cpu"))
    assert r.status == "ok", r.error
    for d in r.diagnostics:
        assert len(d["amplitude"]) == tiny_spec.dims.n_layer
        assert all(0 < a["share"] < 0.2 for a in d["amplitude"])  # RWKV's few percent, not the gate's 50%
        assert d["lr_sum"] == pytest.approx(tiny_spec.lr * sum(lr_at(tiny_spec, s) for s in range(d["step"])))
        assert all(d["moved"][part]["rel"] > 0 for part in ("all", "rwkv6", "mamba2", "ffn", "embed", "norm"))
        assert d["moved"]["fusion"]["rel"] is None and d["moved"]["fusion"]["rms"] > 0  # gf's gate starts at 0
    first, last = r.diagnostics[0]["moved"], r.diagnostics[-1]["moved"]
    assert last["ffn"]["rms"] > first["ffn"]["rms"]  # further from θ₀ the longer it trains


# -- arena show's warnings --------------------------------------------------------------------------------------
def diag(shares: list[float], moved: dict[str, float | None], step: int = 500) -> dict[str, object]:
    return {"step": step, "gates": [{"mean": 0.5, "std": 0.0} for _ in shares],
            "amplitude": [{"rwkv": s, "mamba": 1 - s, "share": s, "interaction": 0.0} for s in shares],
            "moved": {k: {"rel": v, "rms": 0.01} for k, v in moved.items()}, "lr_sum": 0.081}


def test_warnings_name_the_quiet_pathway_and_the_hyperparameter_that_did_not_move() -> None:
    assert (MIN_SHARE, MIN_MOVED) == (0.05, 0.01)
    assert hparam_group("lr_mult") == "mamba2" and hparam_group("gate_init") == "fusion"
    assert hparam_group("corr_init") == "fusion" and hparam_group("lr_scale") == "all"
    quiet = warnings([diag([0.3, 0.3], {}), diag([0.026, 0.2], {"fusion": 0.004, "mamba2": 0.3})],
                     {"gate_init": 0.5, "lr_mult": 1.0})
    assert quiet == [
        "RWKV-6 makes < 5% of the fused output (amplitude share) at step 500 in layer 0 (2.6%): the gate value is "
        "not the mix",
        "gate_init acts on the fusion parameters, which moved 0.40% of their initial norm by step 500 (< 1%): the "
        "run ends about where gate_init started it",
    ]
    loud = warnings([diag([0.97, 0.5], {"mamba2": 0.009})], {"lr_mult": 1.0})
    assert loud == [
        "Mamba-2 makes < 5% of the fused output (amplitude share) at step 500 in layer 0 (3.0%): the gate value "
        "is not the mix",
        "lr_mult acts on the mamba2 parameters, which moved 0.90% of their initial norm by step 500 (< 1%): the "
        "run ends about where lr_mult started it",
    ]
    assert warnings([diag([0.05, 0.95], {"fusion": 0.01, "mamba2": None})], {"gate_init": 0.5, "lr_mult": 1.0}) == []
    assert warnings([diag([0.5], {"all": 0.002})], {"lr_scale": 2.0}) == [
        "lr_scale acts on the whole model's parameters, which moved 0.20% of their initial norm by step 500 (< 1%): "
        "the run ends about where lr_scale started it"]
    assert warnings([], {"gate_init": 0.5}) == [] and warnings([{"step": 3, "gates": [{}]}], {"lr_mult": 1.0}) == []


def test_show_prints_gate_beside_amplitude_the_movement_and_the_warnings() -> None:
    from arena.cli.views import print_result

    r = RunResult(variant="gf", variant_sha="a" * 64, spec_hash="b" * 16, seed=0,
                  hparams={"gate_init": 0.5, "lr_mult": 1.0}, final_val_loss=2.0, val_curve=[(250, 2.1), (500, 2.0)],
                  diagnostics=[diag([0.02, 0.3], {"fusion": 0.02}, step=250),
                               diag([0.031, 0.4], {"rwkv6": 0.123, "fusion": 0.004, "fusion/gate.bias": 0.004,
                                                   "fusion/gate.weight": None, "mamba2": 0.2})])
    console = Console(record=True, width=240, color_system=None)
    print_result(console, r)
    text = console.export_text()
    assert "gate 0.50 0.50 · amplitude 0.031 0.400 (step 500)" in text
    assert "L0 " in text and "0.020→0.031" in text and "0.300→0.400" in text
    assert "rwkv6 12.30% · fusion 0.40% · mamba2 20.00% (Σlr 0.081)" in text
    assert "gate.bias 0.40% · gate.weight from 0 (rms 0.01)" in text
    assert "warning: RWKV-6 makes < 5% of the fused output (amplitude share) at step 500 in layer 0 (3.1%)" in text
    assert "warning: gate_init acts on the fusion parameters, which moved 0.40%" in text
    assert "lr_mult acts" not in text
