"""Mamba-2 on CUDA: mamba_ssm's Triton SSD and causal_conv1d against our references, and our layer against theirs.

Skipped without CUDA or without the kernel packages. Errors are relative, ||got - ref|| / ||ref|| over the whole
tensor. Kernel-vs-reference checks use an fp64 reference computed from the very same (possibly bf16-rounded) inputs;
the SSD kernel multiplies in tf32 for fp32 inputs, so fp32 is only about as exact as bf16 there. Seen on an H100
(mamba_ssm 2.3.2.post1, causal_conv1d 1.7.0, triton 3.6, torch 2.11): SSD y, final state and all gradients fp32
≤ 2.0e-3, bf16 ≤ 4.9e-3 (dA, strong decays); causal_conv1d fp32 ≤ 1.1e-7, bf16 ≤ 2.4e-3; our layer vs mamba_ssm's
Mamba2 (same kernels; torch vs Triton gated norm) fp32 ≤ 1.7e-5, bf16 ≤ 2.2e-4. Run with -s to print each error. The
first call of each kernel autotunes: the file takes 3.5 to 7 minutes on an H100.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from arena.core.spec import ModelDims
from arena.model import backend
from arena.model.mamba2 import Mamba2Mixer
from arena.model.ssd import ssd, ssd_chunk_ref

pytestmark = pytest.mark.gpu

TOL = {torch.float32: 5e-3, torch.bfloat16: 2e-2}  # kernel vs fp64 reference (tf32 inside the fp32 SSD kernel)
LAYER_TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-3}  # our layer vs theirs: the same kernels on both sides
DTYPES = [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")]


def _need_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")


def _need_ssd_kernel() -> Any:
    _need_cuda()
    kernel = backend.mamba_chunk_scan_combined()
    if isinstance(kernel, str):
        pytest.skip(f"mamba_ssm does not import: {kernel}")
    return kernel


def _need_conv_kernel() -> Any:
    _need_cuda()
    conv = backend._try_import("causal_conv1d", "causal_conv1d_fn")  # also when deterministic mode skips it
    if isinstance(conv, str):
        pytest.skip(f"causal_conv1d does not import: {conv}")
    return conv


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def _check(name: str, got: torch.Tensor | None, ref: torch.Tensor | None, tol: float) -> float:
    assert got is not None and ref is not None, f"{name}: missing gradient"
    assert got.shape == ref.shape, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err = _rel(got, ref)
    print(f"{name}: {err:.2e}")  # shown with -s: the measured errors, for the record
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
    return err


def _ssd_inputs(
    b: int, seq: int, h: int, p: int, g: int, n: int, dtype: torch.dtype, *, strong: bool, seed: int
) -> dict[str, torch.Tensor]:
    """Inputs as the layer feeds them: x, dt_raw, B, C in the activation dtype; A, D, dt_bias fp32 parameters."""
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, device="cuda")

    dt_shift = 3.0 if strong else -1.0  # softplus(3) ≈ 3 with A down to -16: dt·A ≈ -50 a step
    a_max = 16.0 if strong else 4.0
    acts = {"x": rnd(b, seq, h, p), "dt_raw": rnd(b, seq, h) + dt_shift, "B": rnd(b, seq, g, n), "C": rnd(b, seq, g, n)}
    params = {
        "A": -(torch.rand(h, generator=gen, device="cuda") * (a_max - 1.0) + 1.0),
        "D": rnd(h),
        "dt_bias": rnd(h) * 0.5,
    }
    out = {k: v.to(dtype) for k, v in acts.items()} | params
    return {k: v.contiguous().requires_grad_() for k, v in out.items()}


def _leaves64(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().double().requires_grad_() for k, v in inputs.items()}


SSD_CASES = [
    # (seq, chunk, heads, groups, strong decays)
    pytest.param(50, 64, 4, 1, False, id="T50<chunk"),
    pytest.param(64, 64, 4, 2, False, id="T64=chunk-G2"),
    pytest.param(200, 64, 8, 2, False, id="T200-ragged-G2"),
    pytest.param(333, 64, 8, 4, True, id="T333-strong-G4"),
    pytest.param(100, 32, 4, 1, True, id="T100-chunk32-strong"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("seq", "chunk", "h", "g", "strong"), SSD_CASES)
def test_ssd_kernel_matches_reference(seq: int, chunk: int, h: int, g: int, strong: bool, dtype: torch.dtype) -> None:
    _need_ssd_kernel()
    inp = _ssd_inputs(2, seq, h, 64, g, 64, dtype, strong=strong, seed=seq)
    names = ["x", "dt_raw", "A", "B", "C", "D", "dt_bias"]
    y, used = ssd(
        inp["x"],
        inp["dt_raw"],
        inp["A"],
        inp["B"],
        inp["C"],
        inp["D"],
        inp["dt_bias"],
        chunk_size=chunk,
        backend="kernel",
    )
    assert used == "kernel" and y.dtype == dtype and y.shape == inp["x"].shape
    ref_in = _leaves64(inp)
    y_ref, used_ref = ssd(
        ref_in["x"],
        ref_in["dt_raw"],
        ref_in["A"],
        ref_in["B"],
        ref_in["C"],
        ref_in["D"],
        ref_in["dt_bias"],
        chunk_size=chunk,
        backend="torch_chunk",
    )
    assert used_ref == "torch_chunk"
    tol = TOL[dtype]
    _check("y", y, y_ref, tol)

    gy = torch.randn(
        y_ref.shape, generator=torch.Generator(device="cuda").manual_seed(7), device="cuda", dtype=torch.float64
    )
    grads = torch.autograd.grad((y.double() * gy).sum(), [inp[k] for k in names])
    grads_ref = torch.autograd.grad((y_ref * gy).sum(), [ref_in[k] for k in names])
    for name, got, ref in zip(names, grads, grads_ref, strict=True):
        _check(f"d{name}", got, ref, tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq", [pytest.param(40, id="T40"), pytest.param(130, id="T130")])
def test_ssd_kernel_initial_and_final_state(seq: int, dtype: torch.dtype) -> None:
    """The kernel's h0 / final-state path against ssd_chunk_ref, gradients of h0 included."""
    kernel = _need_ssd_kernel()
    inp = _ssd_inputs(2, seq, 4, 64, 2, 64, dtype, strong=False, seed=11)
    gen = torch.Generator(device="cuda").manual_seed(12)
    inp["h0"] = torch.randn(2, 4, 64, 64, generator=gen, device="cuda").requires_grad_()  # (b, h, p, n), fp32
    names = ["x", "dt_raw", "A", "B", "C", "D", "dt_bias", "h0"]
    y, hT = kernel(
        inp["x"],
        inp["dt_raw"],
        inp["A"],
        inp["B"],
        inp["C"],
        64,
        D=inp["D"],
        dt_bias=inp["dt_bias"],
        dt_softplus=True,
        initial_states=inp["h0"],
        return_final_states=True,
    )
    ref_in = _leaves64(inp)
    dt = F.softplus(ref_in["dt_raw"] + ref_in["dt_bias"])
    y_ref, hT_ref = ssd_chunk_ref(
        ref_in["x"], dt, ref_in["A"], ref_in["B"], ref_in["C"], ref_in["D"], ref_in["h0"], chunk_size=64
    )
    tol = TOL[dtype]
    _check("y", y, y_ref, tol)
    _check("hT", hT, hT_ref, tol)
    gen = torch.Generator(device="cuda").manual_seed(13)
    gy = torch.randn(y_ref.shape, generator=gen, device="cuda", dtype=torch.float64)
    gh = torch.randn(hT_ref.shape, generator=gen, device="cuda", dtype=torch.float64)
    grads = torch.autograd.grad((y.double() * gy).sum() + (hT.double() * gh).sum(), [inp[k] for k in names])
    grads_ref = torch.autograd.grad((y_ref * gy).sum() + (hT_ref * gh).sum(), [ref_in[k] for k in names])
    for name, got, ref in zip(names, grads, grads_ref, strict=True):
        _check(f"d{name}", got, ref, tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seq", [1, 3, 37, 200])
def test_causal_conv1d_matches_torch_conv(seq: int, dtype: torch.dtype) -> None:
    conv_fn = _need_conv_kernel()
    gen = torch.Generator(device="cuda").manual_seed(seq)
    dim, width = 384, 4
    x = torch.randn(2, dim, seq, generator=gen, device="cuda").to(dtype).requires_grad_()  # (b, d, l)
    w = (torch.randn(dim, width, generator=gen, device="cuda") * 0.5).requires_grad_()  # fp32 params, as the layer
    bias = (torch.randn(dim, generator=gen, device="cuda") * 0.1).requires_grad_()
    out = conv_fn(x, w, bias, activation="silu")
    assert out.dtype == dtype and out.shape == x.shape
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, bias))
    ref = F.silu(F.conv1d(x64, w64[:, None], b64, padding=width - 1, groups=dim)[..., :seq])
    tol = TOL[dtype]
    _check("out", out, ref, tol)
    g = torch.randn(ref.shape, generator=gen, device="cuda", dtype=torch.float64)
    grads = torch.autograd.grad((out.double() * g).sum(), [x, w, bias])
    grads_ref = torch.autograd.grad((ref * g).sum(), [x64, w64, b64])
    for name, got, want in zip(["dx", "dweight", "dbias"], grads, grads_ref, strict=True):
        _check(name, got, want, tol)


# -- our layer against mamba_ssm's Mamba2 -----------------------------------------------------------------------------
# headdim 32 makes in_proj's width (2·256 + 2·G·64 + 8) a multiple of 8: their non-fused path hands causal_conv1d a
# channel-last slice of in_proj's output, which the kernel only takes with a row stride that is a multiple of 8.
LAYER_DIMS = ModelDims(d_model=128, mamba_d_state=64, mamba_head_dim=32, mamba_expand=2, mamba_d_conv=4, mamba_chunk=64)


def _theirs(dims: ModelDims) -> Any:
    try:
        from mamba_ssm.modules.mamba2 import Mamba2
    except Exception as exc:  # ImportError, or a compiled extension that does not load
        pytest.skip(f"mamba_ssm.modules.mamba2 does not import: {type(exc).__name__}: {exc}")
    return Mamba2(
        dims.d_model,
        d_state=dims.mamba_d_state,
        d_conv=dims.mamba_d_conv,
        expand=dims.mamba_expand,
        headdim=dims.mamba_head_dim,
        ngroups=dims.mamba_n_groups,
        rmsnorm=True,
        norm_before_gate=False,
        bias=False,
        conv_bias=True,
        D_has_hdim=False,
        chunk_size=dims.mamba_chunk,
        use_mem_eff_path=False,
    )


@pytest.mark.parametrize("groups", [1, 2])
def test_same_seed_gives_mamba_ssm_weights(groups: int) -> None:
    _need_ssd_kernel()
    dims = dataclasses.replace(LAYER_DIMS, mamba_n_groups=groups)
    torch.manual_seed(0)
    ours = Mamba2Mixer(dims)
    torch.manual_seed(0)
    theirs = _theirs(dims)
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert set(ours_sd) == set(theirs_sd)
    for k, v in theirs_sd.items():
        assert ours_sd[k].shape == v.shape, k
        assert torch.equal(ours_sd[k], v), k
    assert theirs.norm.group_size == ours.norm.group_size and theirs.norm.eps == ours.norm.eps


@pytest.mark.parametrize("seq", [pytest.param(50, id="T50"), pytest.param(150, id="T150")])
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_matches_mamba_ssm(groups: int, seq: int, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch) -> None:
    """Same weights, same input: outputs, input gradient and every parameter gradient (bf16 through autocast)."""
    monkeypatch.setenv("ARENA_DETERMINISTIC", "0")  # so that our layer takes causal_conv1d, as theirs does
    _need_ssd_kernel()
    _need_conv_kernel()  # without it their non-fused path breaks (it reads a misspelt attribute, self.dconv)
    dims = dataclasses.replace(LAYER_DIMS, mamba_n_groups=groups)
    torch.manual_seed(seq)
    ours = Mamba2Mixer(dims, backend="kernel").cuda()
    with torch.no_grad():  # move D, the norm and the decays off their init so that every path carries signal
        ours.D.normal_()
        ours.norm.weight.uniform_(0.5, 1.5)
        ours.dt_bias.add_(1.0)
    theirs = _theirs(dims).cuda()
    theirs.load_state_dict(ours.state_dict(), strict=True)

    x = torch.randn(2, seq, dims.d_model, device="cuda")
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        y_ours = ours(x_ours)
        y_theirs = theirs(x_theirs)
    assert ours.backend_used == "kernel" and ours.conv_backend_used == "causal_conv1d"
    assert y_ours.dtype == y_theirs.dtype
    tol = LAYER_TOL[dtype]
    _check("y", y_ours, y_theirs, tol)

    g = torch.randn(y_theirs.shape, generator=torch.Generator(device="cuda").manual_seed(5), device="cuda")
    (y_ours.float() * g).sum().backward()
    (y_theirs.float() * g).sum().backward()
    _check("dx", x_ours.grad, x_theirs.grad, tol)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        _check(f"d{name}", p.grad, theirs_params[name].grad, tol)


def test_layer_kernel_path_matches_torch_path() -> None:
    """One layer, two backends: causal_conv1d + Triton SSD against F.conv1d + ssd_chunk_ref (default dims)."""
    _need_ssd_kernel()
    torch.manual_seed(3)
    m = Mamba2Mixer(ModelDims(), backend="kernel").cuda()
    x = torch.randn(4, 130, m.d_model, device="cuda")
    y_kernel = m(x)
    used = (m.backend_used, m.conv_backend_used)
    m.backend = "torch_chunk"
    y_torch = m(x)
    assert used[0] == "kernel" and used[1] in ("causal_conv1d", "torch")
    assert (m.backend_used, m.conv_backend_used) == ("torch_chunk", "torch")
    _check("y", y_kernel, y_torch, TOL[torch.float32])
