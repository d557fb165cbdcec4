"""What a run's diagnostics warn a researcher about (``arena show``): the thresholds and the rules, on plain data.

A run records at each eval point (``arena.runner.evaluate.diagnostics``), per layer, the gate value and the
**amplitude share** — each pathway's contribution to the RMS of the fused output (``arena.model.attribution``) —
and per parameter group how far it **moved**, ``rel`` = ‖θ − θ₀‖ / ‖θ₀‖. Two things make a verdict hard to read:

* a pathway that makes less than ``MIN_SHARE`` (5%) of the fused output at the last eval: the block is in effect
  the other pathway alone, whatever the gate says (at init gf's RWKV share is 2.6% with FLA's init);
* a searched hyperparameter whose parameters moved less than ``MIN_MOVED`` (1% of their initial norm): the run
  ends about where that hyperparameter put it, so a search over it compares inits, not what training found.
  ``lr_mult`` acts on the Mamba-2 pathway (it scales that group's learning rate), ``lr_scale`` on the whole model
  (every group's learning rate); every other hyperparameter is read by the fusion (``gate_init``, ``corr_init``,
  ...) and acts on the fusion's parameters. A group that starts at exactly zero has no size to be relative to
  (``rel`` is None) and is not judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MIN_SHARE = 0.05
MIN_MOVED = 0.01
PATHWAYS = (("RWKV-6", False), ("Mamba-2", True))  # name, and whether its share is 1 − the recorded RWKV share


HPARAM_GROUPS = {"lr_mult": "mamba2", "lr_scale": "all"}  # the optimizer's; any other one the fusion reads


def hparam_group(name: str) -> str:
    """The parameter group a hyperparameter acts on (``moved``'s key): ``mamba2`` for ``lr_mult``, the whole model
    (``all``) for ``lr_scale``, the ``fusion`` for the rest."""
    return HPARAM_GROUPS.get(name, "fusion")


def shares(diag: Mapping[str, Any]) -> list[float | None]:
    """Per layer, the RWKV amplitude share recorded at one eval point (None where there is none)."""
    return [a.get("share") for a in diag.get("amplitude") or []]


def warnings(diagnostics: Sequence[Mapping[str, Any]], hparams: Mapping[str, float]) -> list[str]:
    """One line per problem at the last eval point of a run (empty when there is none or no diagnostics)."""
    if not diagnostics:
        return []
    last = diagnostics[-1]
    step = last.get("step")
    out: list[str] = []
    layer_shares = shares(last)
    for name, complement in PATHWAYS:
        low = [(i, 1 - s if complement else s) for i, s in enumerate(layer_shares) if s is not None]
        low = [(i, s) for i, s in low if s < MIN_SHARE]
        if low:
            where = ", ".join(f"{i} ({s:.1%})" for i, s in low)
            out.append(f"{name} makes < {MIN_SHARE:.0%} of the fused output (amplitude share) at step {step} in "
                       f"layer {where}: the gate value is not the mix")
    moved = last.get("moved") or {}
    for hp in sorted(hparams):
        group = hparam_group(hp)
        rel = (moved.get(group) or {}).get("rel")
        if rel is not None and rel < MIN_MOVED:
            whose = "the whole model's parameters" if group == "all" else f"the {group} parameters"
            out.append(f"{hp} acts on {whose}, which moved {rel:.2%} of their initial norm by step "
                       f"{step} (< {MIN_MOVED:.0%}): the run ends about where {hp} started it")
    return out
