"""Packed training (arena.model.pack): K seeds of one variant as one horizontally fused model.

Each member must compute its solo model's function: the same logits and gradients on its own batch, the same
training run within fp32 tolerance, isolated from the other members' divergence; the causality check still sees
a leak inside a pack; a pack short of seeds is filled and reports only its real seeds; the worker trains packs.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from arena.core.options import Execution, RunOptions
from arena.core.spec import PRESETS
from arena.model.fold import fold_heads
from arena.model.lm import HybridLM, build_model
from arena.model.pack import PackedLM
from arena.runner import causality
from arena.runner.evaluate import loss_of, member_losses
from arena.runner.loader import builtin, load_source, shipped_sources
from arena.runner.optim import clip_per_member
from arena.runner.provenance import local_stack
from arena.runner.train import train, train_pack
from arena.runner.trials import packs, run_checked
from arena.runner.worker import Worker

SMOKE = PRESETS["smoke"]
ATOL, RTOL = 2e-6, 1e-5  # fp32: a batched matmul sums in another order than K plain ones


def _grad(t: torch.Tensor) -> torch.Tensor:
    assert t.grad is not None
    return t.grad


def _members(name: str, seeds: list[int]) -> list[HybridLM]:
    v = builtin(name).variant
    return [build_model(SMOKE.dims, v, None, seed=s, backend="torch_chunk") for s in seeds]


# -- the fold --------------------------------------------------------------------------------------------------------
class _Opaque(torch.autograd.Function):
    """A stand-in for a Triton kernel: an old-style Function torch cannot vmap. r (B, T, H, D), u (H, D)."""

    @staticmethod
    def forward(ctx, r, u):
        ctx.save_for_backward(r, u)
        return (r * u).cumsum(1)

    @staticmethod
    def backward(ctx, g):
        r, u = ctx.saved_tensors
        rev = g.flip(1).cumsum(1).flip(1)
        return rev * u, (rev * r).sum((0, 1))


def test_fold_heads_runs_an_unvmappable_kernel_once_with_k_times_the_heads() -> None:
    k, b, t, h, d = 3, 2, 5, 4, 6
    r = torch.randn(k, b, t, h, d, dtype=torch.float64, requires_grad=True)
    u = torch.randn(k, h, d, dtype=torch.float64, requires_grad=True)
    calls: list[tuple[int, ...]] = []

    def kernel(r: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(r.shape))
        return _Opaque.apply(r, u)

    out = torch.func.vmap(lambda r, u: fold_heads(kernel, (r, u), (2, 0), 2))(r, u)
    assert calls == [(b, t, k * h, d)]  # one call, the pack folded into the heads
    out.square().sum().backward()
    for i in range(k):
        ri, ui = r[i].detach().requires_grad_(), u[i].detach().requires_grad_()
        solo = _Opaque.apply(ri, ui)
        solo.square().sum().backward()
        torch.testing.assert_close(out[i], solo)
        torch.testing.assert_close(_grad(r)[i], _grad(ri))
        torch.testing.assert_close(_grad(u)[i], _grad(ui))


def test_the_fixed_order_embedding_runs_per_member_under_vmap() -> None:
    from arena.model.lm import _MatmulGradEmbedding, embed_tokens

    idx = torch.randint(0, 7, (3, 4, 64))  # (K, B, T): 256 rows a member, the reduction split in two
    w = torch.randn(3, 7, 5, dtype=torch.float64, requires_grad=True)
    out = torch.func.vmap(lambda i, ww: embed_tokens(i, ww, True))(idx, w)  # (K, B, T, D)
    weights = torch.randn(out.shape, dtype=torch.float64)
    (out * weights).sum().backward()
    for i in range(3):
        wi = w[i].detach().requires_grad_()
        solo = _MatmulGradEmbedding.apply(idx[i], wi)
        (solo * weights[i]).sum().backward()
        assert torch.equal(out[i], solo)
        torch.testing.assert_close(_grad(w)[i], _grad(wi))


# -- the packed model ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gf", "hy", "cp", "gru_arbiter", "mamba2_only", "rwkv6_only", "gpt"])
def test_each_member_computes_its_solo_models_logits_and_gradients(name: str) -> None:
    seeds = [0, 1, 2]
    pack = PackedLM(_members(name, seeds))
    solo = _members(name, seeds)
    x = torch.randint(0, SMOKE.dims.vocab_size, (3, 2, 24))  # (K, B, T): every member its own batch
    _, logits = pack.embed_forward(x)
    member_losses(logits, x).sum().backward()
    for i, model in enumerate(solo):
        ref = model(x[i])
        loss_of(ref, x[i]).backward()
        torch.testing.assert_close(logits[i], ref, atol=ATOL, rtol=RTOL)
        for n, p in model.named_parameters():
            torch.testing.assert_close(_grad(pack.params[n])[i], _grad(p), atol=ATOL, rtol=RTOL, msg=f"{name} {n}")
    if name == "gru_arbiter":  # nn.GRU has no batching rule: the fusion runs once per member instead
        assert pack.looped == list(range(SMOKE.dims.n_layer))
    elif name in ("gf", "hy", "cp"):
        assert pack.looped == []


def test_member_losses_are_each_members_mean_over_its_own_targets() -> None:
    logits = torch.randn(3, 2, 5, 7)
    y = torch.randint(0, 7, (3, 2, 5))
    y[1, 0, :3] = -100  # member 1 has fewer targets
    got = member_losses(logits, y)
    for i in range(3):
        torch.testing.assert_close(got[i], loss_of(logits[i], y[i]))


def test_clipping_is_per_member_as_clip_grad_norm_is_for_a_solo_model() -> None:
    # the last is a scalar of the solo model (ws's mixing weight): (K,) in the pack
    stacked = [torch.zeros(3, 4, 5, requires_grad=True), torch.zeros(3, 6, requires_grad=True),
               torch.zeros(3, requires_grad=True)]
    grads = [torch.randn(3, 4, 5) * torch.tensor([0.01, 10.0, 100.0]).view(3, 1, 1), torch.randn(3, 6),
             torch.randn(3)]
    for p, g in zip(stacked, grads, strict=True):
        p.grad = g.clone()
    clip_per_member(stacked, 1.0)
    for i in range(3):
        solo = [torch.zeros(4, 5, requires_grad=True), torch.zeros(6, requires_grad=True),
                torch.zeros((), requires_grad=True)]
        for p, g in zip(solo, grads, strict=True):
            p.grad = g[i].clone()
        torch.nn.utils.clip_grad_norm_(solo, 1.0, foreach=True)
        for p, q in zip(stacked, solo, strict=True):
            torch.testing.assert_close(_grad(p)[i], _grad(q))


def test_a_diverging_member_leaves_the_others_untouched() -> None:
    seeds = [0, 1]
    pack = PackedLM(_members("gf", seeds))
    with torch.no_grad():
        pack.params["blocks.0.ffn.0.weight"][1].fill_(float("nan"))  # member 1 is broken
    x = torch.randint(0, SMOKE.dims.vocab_size, (2, 2, 16))
    _, logits = pack.embed_forward(x)
    losses = member_losses(logits, x)
    losses.sum().backward()
    clip_per_member(list(pack.parameters()), 1.0)
    assert not math.isfinite(float(losses[1])) and math.isfinite(float(losses[0]))
    solo = _members("gf", [0])[0]
    loss_of(solo(x[0]), x[0]).backward()
    torch.nn.utils.clip_grad_norm_(list(solo.parameters()), 1.0, foreach=True)
    for n, p in solo.named_parameters():
        assert torch.isfinite(_grad(pack.params[n])[0]).all(), n
        torch.testing.assert_close(_grad(pack.params[n])[0], _grad(p), atol=ATOL, rtol=RTOL)


NON_CAUSAL = '''"""peek: looks at the future."""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class Peek(GatedFusion):
    def forward(self, rwkv, mamba, x):
        return super().forward(rwkv, mamba, x) + torch.flip(mamba, dims=[1])  # (B, T, D)


VARIANT = Variant(name="peek", kind="fusion", summary="peeks ahead", fusion=Peek,
                  hparams={"gate_init": gate_init(), "lr_mult": lr_mult()}, match_params=False)
'''


def test_the_gradient_check_sees_a_leak_inside_a_pack() -> None:
    peek = load_source(NON_CAUSAL, "peek.py").variant
    pack = PackedLM([build_model(SMOKE.dims, peek, None, seed=s, backend="torch_chunk") for s in (0, 1)])
    x = torch.randint(0, SMOKE.dims.vocab_size, (2, 2, 16))
    emb, logits = pack.embed_forward(x)
    assert causality.gradient_leak(emb, logits, 5).leaks
    honest = PackedLM(_members("gf", [0, 1]))
    emb, logits = honest.embed_forward(x)
    assert not causality.gradient_leak(emb, logits, 5).leaks


# -- training ---------------------------------------------------------------------------------------------------------
CPU = RunOptions(device="cpu")


def test_k_packed_seeds_train_as_k_solo_runs_within_fp32_tolerance(tiny_spec) -> None:
    gf = builtin("gf")
    packed = train_pack(tiny_spec, gf, [0, 1, 2], options=RunOptions(device="cpu", execution=Execution(pack=3)))
    for r in packed:
        solo = train(tiny_spec, gf, r.seed, options=CPU)
        assert r.status == solo.status == "ok", (r.error, solo.error)
        assert r.env["pack"]["size"] == 3
        assert abs(r.final_val_loss - solo.final_val_loss) < 1e-5
        assert [s for s, _ in r.train_curve] == [s for s, _ in solo.train_curve]
        for (_, a), (_, b) in zip(r.train_curve, solo.train_curve, strict=True):
            assert abs(a - b) < 1e-5
        for (_, a), (_, b) in zip(r.val_curve, solo.val_curve, strict=True):
            assert abs(a - b) < 1e-5
        assert len(r.diagnostics) == len(solo.diagnostics)
        assert r.diagnostics[-1]["gates"][0]["mean"] == pytest.approx(solo.diagnostics[-1]["gates"][0]["mean"],
                                                                     abs=1e-5)
        # A pack computes every member's gradient norms and movement at once: each member's are its solo run's.
        for d, e in zip(r.diagnostics, solo.diagnostics, strict=True):
            assert d["grad_norms"].keys() == e["grad_norms"].keys()
            for part, v in e["grad_norms"].items():
                assert d["grad_norms"][part] == pytest.approx(v, rel=1e-4), part
            assert d["moved"].keys() == e["moved"].keys()
            for group, v in e["moved"].items():
                assert d["moved"][group]["rms"] == pytest.approx(v["rms"], rel=1e-3, abs=1e-9), group


@pytest.mark.parametrize("name", sorted(shipped_sources()))
def test_every_shipped_variant_trains_in_a_pack_as_its_solo_runs(name: str, tiny_spec) -> None:
    # The H200 found ws crashing in a pack (its scalar mixing weight is (K,) there): every shipped file, every step
    # kind (the eager check steps clip too), against its solo runs.
    variant = builtin(name)
    packed = train_pack(tiny_spec, variant, [0, 1], options=RunOptions(device="cpu", execution=Execution(pack=2)))
    for r in packed:
        solo = train(tiny_spec, variant, r.seed, options=CPU)
        assert r.status == solo.status == "ok", (name, r.error, solo.error)
        assert abs(r.final_val_loss - solo.final_val_loss) < 1e-5, name


def test_member_rates_step_each_member_as_its_own_adamw() -> None:
    """A pack whose members' lr_scale/lr_mult differ: one AdamW step at the fastest rate, each member's slice moved
    by its share of it, equals each member's own AdamW step (weight decay included) to fp32 rounding."""
    from arena.core.spec import PRESETS as ALL
    from arena.runner.optim import MemberRates, make_optimizer

    spec = ALL["smoke"]
    scales, mults = [1.0, 0.5, 2.0], [1.0, 3.0, 0.2]
    members = _members("gf", [0, 0, 0])
    packed = PackedLM([m for m in _members("gf", [0, 0, 0])])
    opt = make_optimizer(packed, spec, mults, capturable=False, lr_scale=scales)
    assert isinstance(opt, MemberRates)
    solos = [make_optimizer(m, spec, mults[k], capturable=False, lr_scale=scales[k]) for k, m in enumerate(members)]
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):  # Adam's moments build up over steps: the shares must hold beyond the first
        grads = {n: torch.randn(p.shape, generator=gen) for n, p in packed.named_parameters()}  # (K, ...) each
        for n, p in packed.named_parameters():
            p.grad = grads[n].clone()
        for k, m in enumerate(members):
            for n, p in m.named_parameters():
                p.grad = grads[n][k].clone()
        opt.step()
        for o in solos:
            o.step()
    for k, m in enumerate(members):
        mine = packed.member_state(k)
        for n, p in m.named_parameters():
            torch.testing.assert_close(mine[n], p.detach(), atol=1e-6, rtol=1e-5, msg=f"member {k}: {n}")
    same = make_optimizer(PackedLM(_members("gf", [0, 1])), spec, 2.0, capturable=False, lr_scale=0.5)
    assert not isinstance(same, MemberRates)  # one rate for all: plain AdamW, as before


def test_a_pack_of_trials_trains_each_member_as_its_solo_run(tiny_spec) -> None:
    """A packed search: K trials of one seed, each with its own gate_init / lr_mult / lr_scale, trained as one
    model; each member's run is its solo run with those hyperparameters (fp32 tolerance)."""
    gf = builtin("gf")
    hps = [None, {"gate_init": 0.2, "lr_mult": 4.0, "lr_scale": 0.5}, {"gate_init": 0.8, "lr_mult": 0.3}]
    packed = train_pack(tiny_spec, gf, [7, 7, 7], options=RunOptions(device="cpu", execution=Execution(pack=3)),
                        member_hparams=hps)
    assert packed[1].hparams["lr_mult"] == 4.0 and packed[2].hparams["gate_init"] == 0.8
    finals = set()
    for r, hp in zip(packed, hps, strict=True):
        solo = train(tiny_spec, gf, 7, hp, options=CPU)
        assert r.status == solo.status == "ok", (r.error, solo.error)
        assert r.hparams == solo.hparams
        assert abs(r.final_val_loss - solo.final_val_loss) < 2e-5
        for (_, a), (_, b) in zip(r.train_curve, solo.train_curve, strict=True):
            assert abs(a - b) < 2e-5
        assert r.diagnostics[-1]["lr_sum"] == pytest.approx(solo.diagnostics[-1]["lr_sum"])
        finals.add(round(r.final_val_loss, 4))
    assert len(finals) == 3  # the hyperparameters took effect: three different runs


def test_a_short_pack_is_filled_and_reports_only_its_seeds(tiny_spec) -> None:
    options = RunOptions(device="cpu", execution=Execution(pack=3))
    full = train_pack(tiny_spec, builtin("gf"), [4, 5, 4], options=options)
    short = train_pack(tiny_spec, builtin("gf"), [4, 5], options=options)
    assert [r.seed for r in short] == [4, 5]
    assert [r.final_val_loss for r in short] == [r.final_val_loss for r in full[:2]]  # bit for bit on the CPU


def test_pack_size_is_part_of_the_stack() -> None:
    assert "pack" not in local_stack(CPU)
    assert local_stack(RunOptions(device="cpu", execution=Execution(pack=4)))["pack"] == 4
    assert packs([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3], [4]]


def test_a_worker_trains_seeds_in_packs_and_checks_each_run(tiny_spec, tmp_path: Path) -> None:
    options = RunOptions(device="cpu", execution=Execution(pack=2), timeout_s=300)
    seen: list[tuple[int, str]] = []
    with Worker(threads=1) as worker:
        results = run_checked(worker, tiny_spec, builtin("gf"), [0, 1, 2], None, options,
                              on_event=lambda seed, e: seen.append((seed, e["type"])))
    assert [r.seed for r in results] == [0, 1, 2]
    assert all(r.status == "ok" and r.env.get("verified") for r in results), [r.error for r in results]
    assert {r.env["pack"]["size"] for r in results} == {2}
    assert {seed for seed, kind in seen if kind == "eval"} == {0, 1, 2}  # the ballast of the last pack sends nothing
    assert sum(kind == "eval" for seed, kind in seen if seed == 0) == len(results[0].val_curve)  # to its own seed
    # Where the wall time went besides training (issue #15 measures it on the GPU): every part recorded.
    for r in results:
        timing = r.env["timing"]
        assert set(timing) >= {"build_s", "capture_s", "eval_s", "final_s", "train_s", "startup_s", "check_s"}
        assert timing["eval_s"] > 0 and timing["startup_s"] > 0 and timing["check_s"] > 0
        assert set(timing["check_parts"]) == {"setup_s", "build_s", "recompute_s", "pairs_s"}
        assert 0 < timing["check_parts"]["recompute_s"] < timing["check_s"]
        assert timing["build_s"] + timing["eval_s"] + timing["final_s"] + timing["train_s"] <= r.wall_s + 1e-6


def test_a_worker_trains_trials_of_one_seed_in_packs_each_with_its_hparams(tiny_spec) -> None:
    """``run_members``: three trials of one seed in packs of 2 (the last one filled); each result carries its own
    hyperparameters and passes the clean check (which rebuilds it from them), events name the member."""
    from arena.runner.trials import run_members

    options = RunOptions(device="cpu", execution=Execution(pack=2), timeout_s=300)
    hps = [{"gate_init": 0.1}, {"gate_init": 0.9, "lr_scale": 2.0}, {"lr_mult": 5.0}]
    seen: list[tuple[int, str]] = []
    with Worker(threads=1) as worker:
        results = run_members(worker, tiny_spec, builtin("gf"), [(3, hp) for hp in hps], options,
                              on_event=lambda i, e: seen.append((i, e["type"])))
    assert [r.seed for r in results] == [3, 3, 3]
    assert all(r.status == "ok" and r.env.get("verified") for r in results), [r.error for r in results]
    assert [r.hparams[k] for r, k in zip(results, ["gate_init", "lr_scale", "lr_mult"], strict=True)] == [0.1, 2.0, 5.0]
    assert len({r.key for r in results}) == 3  # three runs, three keys
    assert {i for i, kind in seen if kind == "eval"} == {0, 1, 2}
    assert len({round(r.final_val_loss, 5) for r in results}) == 3
