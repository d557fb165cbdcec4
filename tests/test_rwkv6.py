"""CPU tests of the RWKV-6 pathway: the WKV references against independent oracles, and the time-mix layer.

Oracles: (a) a plain (t, head) double loop in fp64 written here, in the multiplicative form of the official
CUDA kernel (decay = exp(-exp(w_raw))); (b) FLA's ``naive_recurrent_rwkv6`` and FLA's ``RWKV6Attention`` with
its Triton pieces swapped for their torch equivalents, when FLA imports on this machine (skipped otherwise).
"""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from arena.core.errors import ArenaError
from arena.core.spec import ModelDims
from arena.model.rwkv6 import RWKV6TimeMix
from arena.model.wkv import wkv6, wkv6_chunk_ref, wkv6_recurrent_ref

# FLA 0.6.0 RWKV6Attention(hidden_size=128, num_heads=4, expand_k=0.5, expand_v=1.0, proj_low_rank_dim=32,
# gate_low_rank_dim=64).named_parameters(), in order.
FLA_PARAMS: list[tuple[str, tuple[int, ...]]] = [
    ("x_bias", (5, 128)),
    ("bonus", (4, 16)),
    ("x_proj.0.mu", (128,)),
    ("x_proj.0.linear.weight", (160, 128)),
    ("x_proj.2.weight", (128, 160)),
    ("r_proj.linear.weight", (64, 128)),
    ("w_proj.linear.lora.0.weight", (64, 128)),
    ("w_proj.linear.lora.2.weight", (64, 64)),
    ("w_proj.linear.lora.2.bias", (64,)),
    ("k_proj.linear.weight", (64, 128)),
    ("v_proj.linear.weight", (128, 128)),
    ("g_proj.linear.weight", (128, 128)),
    ("g_norm.weight", (128,)),
    ("g_norm.bias", (128,)),
    ("o_proj.weight", (128, 128)),
]


def _import_or_skip(module: str) -> ModuleType:
    """The module, or a skip naming why it does not import (FLA needs triton and transformers)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception as exc:  # ImportError, or RuntimeError/OSError from triton on odd hosts
        pytest.skip(f"{module} does not import here ({type(exc).__name__}: {exc}); install the test extra")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in fp64."""
    a64, b64 = a.detach().double(), b.detach().double()
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-300))


def make_inputs(
    B: int, T: int, H: int, K: int, V: int, *, dtype: torch.dtype, seed: int, w_raw_max: float = 3.0
) -> dict[str, torch.Tensor]:
    """Random r,k,v, raw decay w_raw ∈ [-4, w_raw_max] (up to w = -e³ ≈ -20 per step), u, h0; all leaves."""
    g = torch.Generator().manual_seed(seed)
    out = {
        "r": torch.randn(B, T, H, K, generator=g, dtype=dtype),
        "k": torch.randn(B, T, H, K, generator=g, dtype=dtype),
        "v": torch.randn(B, T, H, V, generator=g, dtype=dtype),
        "w_raw": torch.rand(B, T, H, K, generator=g, dtype=dtype) * (w_raw_max + 4.0) - 4.0,
        "u": torch.randn(H, K, generator=g, dtype=dtype),
        "h0": torch.randn(B, H, K, V, generator=g, dtype=dtype),
    }
    return {name: t.requires_grad_() for name, t in out.items()}


def oracle_loop(
    r: torch.Tensor, k: torch.Tensor, v: torch.Tensor, w_raw: torch.Tensor, u: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The RWKV-6 recurrence as a plain loop over (t, head) in fp64, as the official CUDA kernel states it:
    ``y_t = r_t @ (u ⊙ k_t v_tᵀ + s)``, then ``s = s ⊙ exp(-exp(w_raw_t)) + k_t v_tᵀ``."""
    _, T, H, _ = r.shape
    r, k, v, w_raw, u, h0 = (x.double() for x in (r, k, v, w_raw, u, h0))
    states = [h0[:, h] for h in range(H)]  # H × [B,K,V]
    rows = []
    for t in range(T):
        heads = []
        for h in range(H):
            kv = torch.einsum("bk,bv->bkv", k[:, t, h], v[:, t, h])
            heads.append(torch.einsum("bk,bkv->bv", r[:, t, h], u[h][None, :, None] * kv + states[h]))
            states[h] = states[h] * torch.exp(-torch.exp(w_raw[:, t, h]))[:, :, None] + kv
        rows.append(torch.stack(heads, dim=1))
    return torch.stack(rows, dim=1), torch.stack(states, dim=1)


def grads_of(outputs: tuple[torch.Tensor, torch.Tensor], inputs: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """Gradients of a random linear functional of (o, hT), so every output element matters."""
    g = torch.Generator().manual_seed(seed)
    o, hT = outputs
    loss = (o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()
    loss = loss + (hT * torch.randn(hT.shape, generator=g, dtype=hT.dtype)).sum()
    return list(torch.autograd.grad(loss, inputs))


def ours(fn: Any, x: dict[str, torch.Tensor], **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return fn(x["r"], x["k"], x["v"], -torch.exp(x["w_raw"]), x["u"], h0=x["h0"], **kw)


NAMES = ["r", "k", "v", "w_raw", "u", "h0"]


# -- (1) the recurrent reference against independent oracles ---------------------------------------------------
def test_recurrent_ref_matches_fp64_loop_oracle() -> None:
    x = make_inputs(2, 23, 3, 8, 6, dtype=torch.float64, seed=0)
    got, want = ours(wkv6_recurrent_ref, x), oracle_loop(*(x[n] for n in NAMES))
    assert got[0].dtype == torch.float64 and got[1].shape == (2, 3, 8, 6)
    assert rel(got[0], want[0]) < 1e-12 and rel(got[1], want[1]) < 1e-12
    inputs = [x[n] for n in NAMES]
    for name, a, b in zip(NAMES, grads_of(got, inputs, 1), grads_of(want, inputs, 1), strict=True):
        assert rel(a, b) < 1e-12, name


def test_recurrent_ref_matches_fla_naive() -> None:
    naive = _import_or_skip("fla.ops.rwkv6.recurrent_naive").naive_recurrent_rwkv6
    x = make_inputs(2, 37, 3, 16, 8, dtype=torch.float32, seed=2)
    got = ours(wkv6_recurrent_ref, x)
    # FLA's naive oracle is head-first [B,H,T,K] and computes in fp32; the layer calls the ops with scale 1.
    o, hT = naive(
        *(x[n].transpose(1, 2) for n in ("r", "k", "v")),
        -torch.exp(x["w_raw"]).transpose(1, 2),
        x["u"],
        scale=1.0,
        initial_state=x["h0"],
        output_final_state=True,
    )
    want = (o.transpose(1, 2), hT)
    assert rel(got[0], want[0]) < 1e-5 and rel(got[1], want[1]) < 1e-5
    inputs = [x[n] for n in NAMES]
    for name, a, b in zip(NAMES, grads_of(got, inputs, 3), grads_of(want, inputs, 3), strict=True):
        assert rel(a, b) < 1e-5, name


# -- (2) the chunked reference against the recurrent one -------------------------------------------------------
@pytest.mark.parametrize(("T", "chunk"), [(45, 32), (100, 32), (37, 16), (64, 16), (130, 64), (5, 32)])
def test_chunk_ref_matches_recurrent_fp64(T: int, chunk: int) -> None:
    x = make_inputs(2, T, 2, 8, 5, dtype=torch.float64, seed=T)  # strong decays: w_raw up to 3 (w = -20)
    got, want = ours(wkv6_chunk_ref, x, chunk_size=chunk), ours(wkv6_recurrent_ref, x)
    assert got[0].shape == want[0].shape == (2, T, 2, 5)
    assert rel(got[0], want[0]) < 1e-10 and rel(got[1], want[1]) < 1e-10
    inputs = [x[n] for n in NAMES]
    for name, a, b in zip(NAMES, grads_of(got, inputs, T), grads_of(want, inputs, T), strict=True):
        assert rel(a, b) < 1e-10, name


def test_chunk_ref_without_h0_and_in_fp32() -> None:
    x = make_inputs(2, 50, 2, 8, 5, dtype=torch.float32, seed=7)
    w = -torch.exp(x["w_raw"])
    got = wkv6_chunk_ref(x["r"], x["k"], x["v"], w, x["u"])
    want = wkv6_recurrent_ref(x["r"], x["k"], x["v"], w, x["u"])
    assert got[0].dtype == torch.float32 and got[1].dtype == torch.float32
    assert rel(got[0], want[0]) < 1e-5 and rel(got[1], want[1]) < 1e-5


def test_chunk_ref_extreme_decay_stays_finite() -> None:
    # w = -e^6 ≈ -403 per step: the cumulative log-decay over a chunk reaches -13,000. A factored form
    # (r·e^b)(k·e^-b) would overflow; ours keeps every exponent ≤ 0.
    x = make_inputs(2, 70, 2, 8, 5, dtype=torch.float32, seed=11, w_raw_max=6.0)
    got, want = ours(wkv6_chunk_ref, x), ours(wkv6_recurrent_ref, x)
    inputs = [x[n] for n in NAMES]
    grads = grads_of(got, inputs, 5)
    assert all(t.isfinite().all() for t in (*got, *grads))
    assert rel(got[0], want[0]) < 1e-5
    for name, a, b in zip(NAMES, grads, grads_of(want, inputs, 5), strict=True):
        assert rel(a, b) < 1e-4, name


def test_wkv6_dispatch_on_cpu() -> None:
    x = make_inputs(1, 20, 2, 4, 4, dtype=torch.float32, seed=1)
    args = (x["r"], x["k"], x["v"], -torch.exp(x["w_raw"]), x["u"])
    o_auto, used_auto = wkv6(*args)
    o_rec, used_rec = wkv6(*args, backend="torch_recurrent")
    assert (used_auto, used_rec) == ("torch_chunk", "torch_recurrent")
    assert rel(o_auto, o_rec) < 1e-5
    with pytest.raises(ArenaError, match="CUDA"):
        wkv6(*args, backend="kernel")


def test_cpu_path_never_imports_fla() -> None:
    code = (
        "import sys, torch\n"
        "from arena.model.rwkv6 import RWKV6TimeMix\n"
        "from arena.core.spec import ModelDims\n"
        "m = RWKV6TimeMix(ModelDims(d_model=16, rwkv_heads=2, rwkv_mix_rank=4, rwkv_decay_rank=4))\n"
        "m(torch.randn(1, 5, 16)).sum().backward()\n"
        "assert not any(n == 'fla' or n.startswith(('fla.', 'triton')) for n in sys.modules), 'fla imported'\n"
    )
    subprocess.run([sys.executable, "-P", "-c", code], check=True, timeout=120)


# -- (3) the time-mix layer ------------------------------------------------------------------------------------
SEED_DIMS = ModelDims()  # d_model 128, 4 heads, expand 0.5/1.0, ranks 32/64
SMALL = ModelDims(d_model=32, n_layer=4, rwkv_heads=2, rwkv_mix_rank=4, rwkv_decay_rank=8)


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Make every parameter nonzero (the fla init leaves mu, x_bias, bonus at 0, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)


def test_param_names_shapes_and_count() -> None:
    m = RWKV6TimeMix(SEED_DIMS)
    assert [(n, tuple(p.shape)) for n, p in m.named_parameters()] == FLA_PARAMS
    assert sum(p.numel() for p in m.parameters()) == 119_936


def test_param_names_match_fla_layer() -> None:
    layers = _import_or_skip("fla.layers.rwkv6")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = layers.RWKV6Attention(
            hidden_size=128, num_heads=4, expand_k=0.5, expand_v=1.0, proj_low_rank_dim=32, gate_low_rank_dim=64
        )
    assert [(n, tuple(p.shape)) for n, p in theirs.named_parameters()] == FLA_PARAMS
    # The fla init: same zero pattern and the same scale as FLA's own _initialize_weights.
    mine = dict(RWKV6TimeMix(SEED_DIMS).named_parameters())
    for name, p in theirs.named_parameters():
        q = mine[name]
        assert bool((p == 0).all()) == bool((q == 0).all()), name
        assert abs(float(p.detach().std()) - float(q.detach().std())) <= 0.15 * float(p.detach().std()) + 1e-12, name


@pytest.mark.parametrize("init", ["fla", "x060"])
def test_layer_causal_finite_and_backward(init: str) -> None:
    dims = dataclasses.replace(SMALL, rwkv_init=init)
    m = RWKV6TimeMix(dims, layer_idx=1)
    randomize(m, seed=0)  # the x060 init zeroes o_proj: without this the output would be identically 0
    x = torch.randn(2, 40, 32, generator=torch.Generator().manual_seed(1))
    y = m(x)
    assert y.shape == x.shape and m.backend_used == "torch_chunk" and y.isfinite().all()
    t0 = 17
    x2 = x.clone()
    x2[:, t0 + 1 :] = torch.randn(2, 40 - t0 - 1, 32)
    y2 = m(x2)
    assert torch.allclose(y2[:, : t0 + 1], y[:, : t0 + 1], atol=1e-6, rtol=0)
    assert not torch.allclose(y2[:, t0 + 1 :], y[:, t0 + 1 :])
    y.square().mean().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in m.parameters())


@pytest.mark.parametrize("init", ["fla", "x060"])
def test_inits_run_and_are_what_they_claim(init: str) -> None:
    dims = dataclasses.replace(SEED_DIMS, rwkv_init=init)
    last = RWKV6TimeMix(dims, layer_idx=dims.n_layer - 1)
    first = RWKV6TimeMix(dims, layer_idx=0)
    x = torch.randn(2, 33, 128, generator=torch.Generator().manual_seed(0))
    for m in (first, last):
        y = m(x)
        assert y.isfinite().all()
        y.sum().backward()
        assert all(p.grad is not None and p.grad.isfinite().all() for p in m.parameters())
    sd = last.state_dict()
    decay_bias = sd["w_proj.linear.lora.2.bias"]
    if init == "fla":
        assert last.g_norm.eps == 1e-5
        for name in ("x_bias", "bonus", "x_proj.0.mu", "w_proj.linear.lora.2.bias", "w_proj.linear.lora.0.weight"):
            assert bool((sd[name] == 0).all()), name
    else:
        assert last.g_norm.eps == pytest.approx(64e-5)
        assert bool((sd["o_proj.weight"] == 0).all())
        # time_decay from -6 to -1 (decay 0.9975 .. 0.69); zig-zag bonus; ln_x scale ((1+l)/L)^0.7.
        assert decay_bias[0].item() == pytest.approx(-6.0) and decay_bias[-1].item() == pytest.approx(-1.0)
        assert first.bonus.flatten()[:3].tolist() == pytest.approx([0.0, 0.1, -0.1])
        assert first.g_norm.weight[0].item() == pytest.approx((1 / 8) ** 0.7)
        assert last.g_norm.weight[0].item() == pytest.approx(1.0)
        # Static mixes: 1 - (i/D)^ratio per channel (channel 0 takes the whole previous token).
        assert first.x_bias[:, 0].tolist() == pytest.approx([1.0] * 5) and (first.x_bias <= 1).all()


@pytest.fixture()
def fla_layer_on_cpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """FLA's RWKV6Attention class with its Triton-only pieces swapped for FLA's own torch equivalents."""
    layers = _import_or_skip("fla.layers.rwkv6")
    token_shift_ref = importlib.import_module("fla.modules.token_shift").token_shift_ref
    naive = importlib.import_module("fla.ops.rwkv6.recurrent_naive").naive_recurrent_rwkv6

    def wkv_naive(
        r: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        w: torch.Tensor,
        u: torch.Tensor,
        scale: float | None = None,
        initial_state: torch.Tensor | None = None,
        output_final_state: bool = False,
        **_: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        o, ht = naive(
            r.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            w.transpose(1, 2),
            u,
            scale=scale,
            initial_state=initial_state,
            output_final_state=output_final_state,
        )
        return o.transpose(1, 2), ht

    monkeypatch.setattr(layers, "token_shift", token_shift_ref)
    monkeypatch.setattr(layers, "chunk_rwkv6", wkv_naive)
    monkeypatch.setattr(layers, "fused_recurrent_rwkv6", wkv_naive)
    yield layers.RWKV6Attention


@pytest.mark.parametrize("T", [40, 80])  # FLA picks fused_recurrent for T ≤ 64 and chunk above
def test_layer_matches_fla_layer(fla_layer_on_cpu: Any, T: int) -> None:
    dims = dataclasses.replace(SMALL, d_model=64, rwkv_heads=4, rwkv_mix_rank=8, rwkv_decay_rank=16)
    mine = RWKV6TimeMix(dims, backend="torch_chunk")
    randomize(mine, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = fla_layer_on_cpu(
            hidden_size=64, num_heads=4, expand_k=0.5, expand_v=1.0, proj_low_rank_dim=8, gate_low_rank_dim=16
        )
    theirs.load_state_dict(mine.state_dict(), strict=True)
    RWKV6TimeMix(dims).load_state_dict(theirs.state_dict(), strict=True)  # and back
    norm = theirs.g_norm
    norm.forward = lambda o: F.group_norm(o.reshape(-1, o.shape[-1]), 4, norm.weight, norm.bias, norm.eps).view(o.shape)
    theirs.gate_fn = F.silu
    x = torch.randn(2, T, 64, generator=torch.Generator().manual_seed(T))
    y_mine, y_theirs = mine(x), theirs(x)[0]
    assert rel(y_mine, y_theirs) < 1e-5
    dy = torch.randn(y_mine.shape, generator=torch.Generator().manual_seed(0))
    (y_mine * dy).sum().backward()
    (y_theirs * dy).sum().backward()
    their_params = dict(theirs.named_parameters())
    for name, p in mine.named_parameters():
        assert p.grad is not None and their_params[name].grad is not None, name
        assert rel(p.grad, their_params[name].grad) < 1e-4, name


@pytest.mark.parametrize("n_rows", [4096, 256, 100])
def test_slot_mix_gradient_split_is_the_einsum(n_rows: int) -> None:
    """The CUDA slot mix (weight gradient over row chunks) equals the einsum it replaces, values and gradients."""
    from arena.model.fold import split_rows
    from arena.model.rwkv6 import _SlotMix

    g = torch.Generator().manual_seed(n_rows)
    z = torch.randn(n_rows, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)  # [N,S,R]
    w = torch.randn(12, 5, 8, generator=g, dtype=torch.float64, requires_grad=True)  # [D,S,R]
    up = torch.randn(n_rows, 5, 12, generator=g, dtype=torch.float64)  # [N,S,D]
    ref = torch.einsum("bnr,dnr->bnd", z, w)
    ref_gz, ref_gw = torch.autograd.grad((ref * up).sum(), (z, w))
    out = _SlotMix.apply(z, w)
    gz, gw = torch.autograd.grad((out * up).sum(), (z, w))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(gz, ref_gz, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, ref_gw, rtol=1e-12, atol=1e-12)
    assert split_rows(n_rows) == {4096: 16, 256: 2, 100: 1}[n_rows]
    assert torch.autograd.gradcheck(_SlotMix.apply, (z[:6].detach().requires_grad_(), w))
