"""Mamba-2 on the CPU: the SSD references against independent oracles, and the Mamba2Mixer layer."""

from __future__ import annotations

import math
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from arena.core.errors import ArenaError
from arena.core.spec import ModelDims
from arena.model.mamba2 import Mamba2Mixer
from arena.model.ssd import ssd, ssd_backend, ssd_chunk_ref, ssd_recurrent_ref

F64 = torch.float64


def _inputs(
    b: int,
    seq: int,
    h: int,
    p: int,
    g: int,
    n: int,
    *,
    seed: int,
    dtype: torch.dtype = F64,
    dt_scale: float = 1.0,
    a_max: float = 4.0,
) -> dict[str, torch.Tensor]:
    """Random SSD inputs (dt > 0, A < 0) from a local generator; dt_scale·a_max sets how strong the decays are."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=F64)

    out = {
        "x": rnd(b, seq, h, p),
        "dt": F.softplus(rnd(b, seq, h)) * dt_scale,
        "A": -(torch.rand(h, generator=gen, dtype=F64) * (a_max - 0.1) + 0.1),
        "B": rnd(b, seq, g, n),
        "C": rnd(b, seq, g, n),
        "D": rnd(h),
        "h0": rnd(b, h, p, n),
    }
    return {k: v.to(dtype) for k, v in out.items()}


# -- independent oracles -------------------------------------------------------------------------------------------
def _segsum_listing1(a: torch.Tensor) -> torch.Tensor:
    """Listing 1's stable segment sum: out[..., i, j] = a_{j+1} + ... + a_i (i ≥ j), -inf above the diagonal."""
    t = a.shape[-1]
    rep = a.unsqueeze(-1).repeat(*([1] * a.dim()), t)  # (..., t, t), rep[..., i, j] = a_i
    rep = rep.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=-1), 0.0)
    out = torch.cumsum(rep, dim=-2)
    return out.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool), diagonal=0), -math.inf)


def _ssd_listing1(
    X: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, block: int, h0: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A transcription of the math of ``ssd_minimal_discrete`` (Mamba-2 paper, Listing 1) in plain torch.

    X = x·dt [b,l,h,p], A = A·dt [b,l,h], B and C per head [b,l,h,n]; l % block == 0. No D.
    """
    b, seq, h, p = X.shape
    n = B.shape[-1]
    c = seq // block
    Xc, Bc, Cc = (t.reshape(b, c, block, *t.shape[2:]) for t in (X, B, C))
    Ac = A.reshape(b, c, block, h).permute(0, 3, 1, 2)  # (b, h, c, l)
    A_cumsum = torch.cumsum(Ac, dim=-1)
    L = torch.exp(_segsum_listing1(Ac))  # (b, h, c, l, s)
    Y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, L, Xc)
    decay_states = torch.exp(A_cumsum[..., -1:] - A_cumsum)  # (b, h, c, l)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, Xc)
    init = torch.zeros(b, 1, h, p, n, dtype=X.dtype) if h0 is None else h0[:, None]
    states = torch.cat([init, states], dim=1)  # (b, c+1, h, p, n)
    decay_chunk = torch.exp(_segsum_listing1(F.pad(A_cumsum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    new_states = torch.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    Y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, torch.exp(A_cumsum))
    return (Y_diag + Y_off).reshape(b, seq, h, p), final


def _ssd_double_loop(
    x: torch.Tensor,
    dt: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor,
    h0: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence written out per time step and per head, with the group index spelled out."""
    seq, h = x.shape[1], x.shape[2]
    heads_per_group = h // B.shape[2]
    y = torch.zeros_like(x)
    state = h0.clone()
    for t in range(seq):
        for hh in range(h):
            g = hh // heads_per_group
            state[:, hh] = torch.exp(dt[:, t, hh] * A[hh])[:, None, None] * state[:, hh] + (
                dt[:, t, hh, None, None] * x[:, t, hh, :, None] * B[:, t, g, None, :]
            )
            y[:, t, hh] = (state[:, hh] * C[:, t, g, None, :]).sum(-1) + D[hh] * x[:, t, hh]
    return y, state


# -- the SSD references ----------------------------------------------------------------------------------------------
def test_recurrent_ref_matches_listing1() -> None:
    i = _inputs(2, 96, 4, 8, 2, 16, seed=0)
    y, hT = ssd_recurrent_ref(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], i["h0"])
    per_head = torch.arange(4) // 2  # head h reads group h // (H/G)
    Y, final = _ssd_listing1(
        i["x"] * i["dt"][..., None], i["A"] * i["dt"], i["B"][:, :, per_head], i["C"][:, :, per_head], 32, i["h0"]
    )
    Y = Y + i["D"][:, None] * i["x"]
    assert y.dtype == F64 and hT.dtype == F64
    torch.testing.assert_close(y, Y, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hT, final, rtol=1e-10, atol=1e-10)


def test_recurrent_ref_matches_double_loop() -> None:
    i = _inputs(2, 13, 6, 4, 3, 5, seed=1)
    y, hT = ssd_recurrent_ref(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], i["h0"])
    y2, hT2 = _ssd_double_loop(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], i["h0"])
    torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hT, hT2, rtol=1e-12, atol=1e-12)


def test_groups_map_to_heads_by_repeat_interleave() -> None:
    """With G=2, H=4 the first two heads read group 0 only (tiling would hand head 1 group 1)."""
    i = _inputs(1, 20, 4, 4, 2, 8, seed=2)
    y, _ = ssd_recurrent_ref(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"])
    y_g0, _ = ssd_recurrent_ref(
        i["x"][:, :, :2], i["dt"][:, :, :2], i["A"][:2], i["B"][:, :, :1], i["C"][:, :, :1], i["D"][:2]
    )
    torch.testing.assert_close(y[:, :, :2], y_g0, rtol=0, atol=0)
    yc, _ = ssd_chunk_ref(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], chunk_size=8)
    torch.testing.assert_close(yc, y, rtol=1e-12, atol=1e-12)


CASES = [
    # (seq, chunk, heads, groups, dt_scale, a_max)
    (1, 16, 2, 1, 1.0, 4.0),
    (37, 16, 4, 2, 1.0, 4.0),  # T not a multiple of the chunk, G > 1
    (64, 64, 2, 1, 1.0, 4.0),  # T == chunk
    (50, 64, 4, 4, 1.0, 4.0),  # T < chunk, one group per head
    (150, 64, 4, 2, 1.0, 4.0),  # T > 64, ragged tail
    (100, 32, 2, 1, 8.0, 16.0),  # strong decays: dt·A down to about -100 a step
]


@pytest.mark.parametrize(("seq", "chunk", "h", "g", "dt_scale", "a_max"), CASES)
def test_chunk_ref_matches_recurrent_fp64(seq: int, chunk: int, h: int, g: int, dt_scale: float, a_max: float) -> None:
    i = _inputs(2, seq, h, 8, g, 16, seed=seq, dt_scale=dt_scale, a_max=a_max)
    names = ["x", "dt", "A", "B", "C", "D", "h0"]
    gen = torch.Generator().manual_seed(99)

    def run(fn: Any, **kw: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        leaves = {k: i[k].clone().requires_grad_() for k in names}
        y, hT = fn(*(leaves[k] for k in names), **kw)
        return y, hT, leaves

    y_r, hT_r, leaves_r = run(ssd_recurrent_ref)
    y_c, hT_c, leaves_c = run(ssd_chunk_ref, chunk_size=chunk)
    assert torch.isfinite(y_c).all() and torch.isfinite(hT_c).all()
    torch.testing.assert_close(y_c, y_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(hT_c, hT_r, rtol=1e-10, atol=1e-10)

    gy = torch.randn(y_r.shape, generator=gen, dtype=F64)
    gh = torch.randn(hT_r.shape, generator=gen, dtype=F64)
    grads_r = torch.autograd.grad((y_r * gy).sum() + (hT_r * gh).sum(), [leaves_r[k] for k in names])
    grads_c = torch.autograd.grad((y_c * gy).sum() + (hT_c * gh).sum(), [leaves_c[k] for k in names])
    for name, gr, gc in zip(names, grads_r, grads_c, strict=True):
        assert torch.isfinite(gc).all(), name
        torch.testing.assert_close(gc, gr, rtol=1e-9, atol=1e-9, msg=f"gradient of {name} differs")


def test_chunk_ref_fp32_close_to_fp64_oracle() -> None:
    i = _inputs(2, 200, 4, 16, 1, 32, seed=5)
    y64, hT64 = ssd_recurrent_ref(i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], i["h0"])
    i32 = {k: v.float() for k, v in i.items()}
    y32, hT32 = ssd_chunk_ref(i32["x"], i32["dt"], i32["A"], i32["B"], i32["C"], i32["D"], i32["h0"])
    assert y32.dtype == torch.float32 and hT32.dtype == torch.float32
    assert (y32.double() - y64).abs().max() <= 1e-4 * y64.abs().max()
    assert (hT32.double() - hT64).abs().max() <= 1e-4 * hT64.abs().max()


def test_refs_stay_fp32_under_bf16_autocast() -> None:
    i = {k: v.float() for k, v in _inputs(2, 70, 4, 16, 1, 32, seed=8).items()}
    args = (i["x"], i["dt"], i["A"], i["B"], i["C"], i["D"], i["h0"])
    y_ref, hT_ref = ssd_chunk_ref(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for fn in (ssd_chunk_ref, ssd_recurrent_ref):
            y, hT = fn(*args)
            assert y.dtype == torch.float32
            torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(hT, hT_ref, rtol=1e-4, atol=1e-4)


def test_ssd_dispatch_softplus_bias_and_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ARENA_BACKEND", raising=False)
    i = _inputs(2, 40, 4, 8, 2, 16, seed=6)
    dt_raw, dt_bias = torch.randn(2, 40, 4, dtype=F64), torch.randn(4, dtype=F64)
    args = (i["x"], dt_raw, i["A"], i["B"], i["C"], i["D"], dt_bias)
    y_auto, used = ssd(*args, chunk_size=16)
    assert used == "torch_chunk" and ssd_backend("auto", i["x"]) == "torch_chunk"
    y_rec, used_rec = ssd(*args, chunk_size=16, backend="torch_recurrent")
    assert used_rec == "torch_recurrent"
    torch.testing.assert_close(y_auto, y_rec, rtol=1e-10, atol=1e-10)
    expected, _ = ssd_recurrent_ref(i["x"], F.softplus(dt_raw + dt_bias), i["A"], i["B"], i["C"], i["D"])
    torch.testing.assert_close(y_auto, expected, rtol=1e-10, atol=1e-10)
    limited, _ = ssd(*args, chunk_size=16, dt_limit=(0.2, 0.5))
    expected, _ = ssd_recurrent_ref(
        i["x"], F.softplus(dt_raw + dt_bias).clamp(0.2, 0.5), i["A"], i["B"], i["C"], i["D"]
    )
    torch.testing.assert_close(limited, expected, rtol=1e-10, atol=1e-10)
    with pytest.raises(ArenaError, match="CUDA"):
        ssd(*args, chunk_size=16, backend="kernel")


# -- the layer -------------------------------------------------------------------------------------------------------
def test_layer_params_match_mamba_ssm_layout() -> None:
    m = Mamba2Mixer(
        ModelDims(d_model=128, mamba_d_state=64, mamba_head_dim=64, mamba_expand=2, mamba_d_conv=4, mamba_n_groups=1)
    )
    shapes = {k: tuple(v.shape) for k, v in m.named_parameters()}
    assert shapes == {
        "in_proj.weight": (2 * 256 + 2 * 64 + 4, 128),  # [z, xBC, dt]
        "conv1d.weight": (384, 1, 4),
        "conv1d.bias": (384,),
        "dt_bias": (4,),
        "A_log": (4,),
        "D": (4,),
        "norm.weight": (256,),
        "out_proj.weight": (128, 256),
    }
    assert sum(p.numel() for p in m.parameters()) == 117_388
    assert list(m.state_dict()) == [k for k, _ in m.named_parameters()]  # no buffers


def test_layer_init() -> None:
    torch.manual_seed(0)
    m = Mamba2Mixer(ModelDims(d_model=256, mamba_head_dim=16))  # 32 heads: enough draws to see the ranges
    dt = F.softplus(m.dt_bias.detach())
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    A = m.A_log.detach().exp()
    assert A.min() >= 1.0 and A.max() <= 16.0
    assert torch.equal(m.D.detach(), torch.ones(32)) and torch.equal(m.norm.weight.detach(), torch.ones(512))
    bound = 1 / math.sqrt(4)  # nn.Conv1d's default: fan_in = 1 channel × width 4
    assert m.conv1d.bias is not None
    assert m.conv1d.weight.abs().max() <= bound and m.conv1d.bias.abs().max() <= bound


def _small_dims(**kw: int) -> ModelDims:
    base = {"d_model": 32, "mamba_d_state": 16, "mamba_head_dim": 16, "mamba_chunk": 16}
    base.update(kw)
    return ModelDims(**base)


def _conv_by_hand(m: Mamba2Mixer, xBC: torch.Tensor) -> torch.Tensor:
    """Depthwise causal conv one output step at a time, then silu: out_t = silu(bias + Σ_k w[:, W-1-k] · x_{t-k})."""
    w = m.conv1d.weight[:, 0]  # (C, W): tap W-1 is the current step
    assert m.conv1d.bias is not None
    width = w.shape[1]
    steps = []
    for t in range(xBC.shape[1]):
        acc = m.conv1d.bias.expand(xBC.shape[0], -1)
        for k in range(min(width, t + 1)):
            acc = acc + w[:, width - 1 - k] * xBC[:, t - k]
        steps.append(acc)
    conv = torch.stack(steps, dim=1)
    return conv * torch.sigmoid(conv)


def test_torch_conv_equals_per_step_conv() -> None:
    torch.manual_seed(4)
    m = Mamba2Mixer(_small_dims(mamba_d_conv=3)).double()
    for seq in (1, 2, 9):  # also shorter than the conv width
        xBC = torch.randn(2, seq, m.conv1d.weight.shape[0], dtype=F64)
        torch.testing.assert_close(m._conv(xBC, use_kernel=False), _conv_by_hand(m, xBC), rtol=1e-12, atol=1e-12)
    assert m.conv_backend_used == "torch"


def _layer_by_hand(m: Mamba2Mixer, x: torch.Tensor) -> torch.Tensor:
    """The layer's math written step by step from its parameters: explicit per-step conv, recurrent SSD."""
    bsz, seq, _ = x.shape
    d_in, gn, h = m.d_inner, m.ngroups * m.d_state, m.nheads
    zxbcdt = x @ m.in_proj.weight.T
    z, xBC, dt_raw = zxbcdt[..., :d_in], zxbcdt[..., d_in : 2 * d_in + 2 * gn], zxbcdt[..., 2 * d_in + 2 * gn :]
    xBC = _conv_by_hand(m, xBC)
    xs, B, C = xBC[..., :d_in], xBC[..., d_in : d_in + gn], xBC[..., d_in + gn :]
    dt = F.softplus(dt_raw + m.dt_bias)
    y, _ = ssd_recurrent_ref(
        xs.reshape(bsz, seq, h, -1),
        dt,
        -m.A_log.exp(),
        B.reshape(bsz, seq, m.ngroups, -1),
        C.reshape(bsz, seq, m.ngroups, -1),
        m.D,
    )
    g = y.reshape(bsz, seq, d_in) * z * torch.sigmoid(z)
    g = g.reshape(bsz, seq, m.ngroups, -1)
    g = g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)
    return (g.reshape(bsz, seq, d_in) * m.norm.weight) @ m.out_proj.weight.T


@pytest.mark.parametrize("groups", [1, 2])
def test_layer_matches_by_hand_reference(groups: int) -> None:
    torch.manual_seed(1)
    m = Mamba2Mixer(_small_dims(mamba_n_groups=groups)).double()
    with torch.no_grad():  # move D and the norm weight off their trivial init so that they are exercised
        m.D.normal_()
        m.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 37, 32, dtype=F64)
    y = m(x)
    assert m.backend_used == "torch_chunk" and m.conv_backend_used == "torch"
    torch.testing.assert_close(y, _layer_by_hand(m, x), rtol=1e-10, atol=1e-10)
    assert "mamba_ssm" not in sys.modules and "causal_conv1d" not in sys.modules


def test_layer_causal_finite_and_backward() -> None:
    torch.manual_seed(2)
    m = Mamba2Mixer(_small_dims(mamba_n_groups=2))
    x = torch.randn(2, 40, 32, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    x2 = x.detach().clone()
    x2[:, 25] += 10.0
    y2 = m(x2)
    assert torch.equal(y2[:, :25], y.detach()[:, :25])
    assert (y2[:, 25:] - y.detach()[:, 25:]).abs().max() > 1e-3


def test_layer_backends_agree() -> None:
    torch.manual_seed(3)
    m = Mamba2Mixer(_small_dims()).double()
    x = torch.randn(1, 45, 32, dtype=F64)
    y_chunk = m(x)
    m.backend = "torch_recurrent"
    y_rec = m(x)
    assert m.backend_used == "torch_recurrent"
    torch.testing.assert_close(y_chunk, y_rec, rtol=1e-10, atol=1e-10)
