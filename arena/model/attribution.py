"""How much of a fusion's output each pathway makes: the amplitude share, for any fusion module.

The nominal gate value is not the mix. At init the pathways' outputs differ about 37× in RMS (RWKV-6 0.015 with
FLA's init, Mamba-2 0.57 at phase2), so gf's gate of 0.5 gives RWKV a few percent of the fused signal. A fusion is
an arbitrary module, so the contributions are defined by ablation, with the two-player Shapley value (the order in
which the pathways are removed does not matter, and the two contributions add up exactly):

    f(r, m) = fusion(rwkv=r, mamba=m, x=h), and with 0 a pathway replaced by zeros (same shape):
    φ_rwkv  = ½ [(f(r, m) − f(0, m)) + (f(r, 0) − f(0, 0))]
    φ_mamba = ½ [(f(r, m) − f(r, 0)) + (f(0, m) − f(0, 0))]        φ_rwkv + φ_mamba = f(r, m) − f(0, 0)
    interaction = f(r, m) − f(r, 0) − f(0, m) + f(0, 0)
    share   = RMS(φ_rwkv) / (RMS(φ_rwkv) + RMS(φ_mamba))            RMS over every (batch, position, channel)

For every mix that is linear in the pathways (gf, gf_mh, gf_rh, ws, hy, rf, cp: y = A·rwkv + B·mamba + c with A,
B, c independent of the pathways) φ_rwkv is exactly A·rwkv and φ_mamba exactly B·mamba, and the interaction is 0:
gf's share is RMS(g·rwkv) / (RMS(g·rwkv) + RMS((1−g)·mamba)). Where the mix depends on the pathways themselves
(gru_arbiter's gate reads both) the Shapley value splits the dependence evenly and ``interaction`` says how large
it is. Cost: three more calls of the fusion per layer on the diagnostics batch, without autograd.
"""

from __future__ import annotations

import math

import torch

from arena.core.variant import Fusion


def _rms(t: torch.Tensor) -> float | None:
    """RMS over every element; None when it is not finite (a diverged or broken fusion; the store holds JSON)."""
    value = float(t.detach().float().pow(2).mean().sqrt())
    return value if math.isfinite(value) else None


@torch.no_grad()
def amplitude(fusion: Fusion, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor,
              y: torch.Tensor | None = None) -> dict[str, float | None]:
    """Per pathway the RMS of its contribution to ``fusion``'s output (see the module doc), the RWKV amplitude
    share and the RMS of the interaction; inputs (B, T, D), ``y`` the fusion's output on them if already computed.
    ``share`` is None when both contributions are zero or a value is not finite, every value None when the fusion
    fails on a zeroed pathway. The fusion's ``last_share`` is left as the real forward set it."""
    kept = getattr(fusion, "last_share", None)  # a subclass that skipped Fusion.__init__ has none
    zr, zm = torch.zeros_like(rwkv), torch.zeros_like(mamba)  # (B, T, D) each
    try:
        f_rm = y if y is not None else fusion(rwkv=rwkv, mamba=mamba, x=x)  # (B, T, D)
        f_0m = fusion(rwkv=zr, mamba=mamba, x=x)  # (B, T, D)
        f_r0 = fusion(rwkv=rwkv, mamba=zm, x=x)  # (B, T, D)
        f_00 = fusion(rwkv=zr, mamba=zm, x=x)  # (B, T, D)
    except Exception:  # a fusion that cannot take a zeroed pathway: no amplitudes, but the run goes on
        return dict.fromkeys(("rwkv", "mamba", "share", "interaction"))
    finally:
        fusion.last_share = kept  # the ablations must not overwrite the gate diagnostics of the real forward
    c_rwkv = _rms(0.5 * ((f_rm - f_0m) + (f_r0 - f_00)))
    c_mamba = _rms(0.5 * ((f_rm - f_r0) + (f_0m - f_00)))
    share = None
    if c_rwkv is not None and c_mamba is not None and c_rwkv + c_mamba > 0:
        share = c_rwkv / (c_rwkv + c_mamba)
    return {"rwkv": c_rwkv, "mamba": c_mamba, "share": share, "interaction": _rms(f_rm - f_r0 - f_0m + f_00)}
