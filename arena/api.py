"""The public variant API: everything a variant file may import.

A variant is one Python file that ends with one explicit declaration::

    VARIANT = Variant(name="gf", kind="fusion", summary="...", fusion=GatedFusion,
                      hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()})

The loader (``arena.variants_loader``) reads ``VARIANT`` from the file it loads by path; nothing is registered
globally at import. Variants never import the runner: the benchmark protocol is out of their reach.

Contract of a fusion module (``Fusion`` subclass):

* ``__init__(self, d_model: int, hp: Mapping[str, float])`` — ``hp`` holds the variant's resolved
  hyperparameters (defaults, or the values a search chose). Dimensions come from the benchmark spec.
* ``forward(self, rwkv, mamba, x) -> y`` with all three ``(B, T, D)``: ``rwkv`` and ``mamba`` are the two
  pathway outputs, ``x`` the (normed) block input. ``y`` must be causal in T: position t may only use
  positions ≤ t (validated at load time).
* For diagnostics, a fusion that has an RWKV share sets ``self.last_share`` to a detached tensor of that share
  (any shape broadcastable to (B, T, D), values in [0, 1]) during forward. ``None`` means "no gate".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

if TYPE_CHECKING:  # imported lazily below (module __getattr__): arena.fusions imports this module
    from arena.fusions import GatedFusion

__all__ = [
    "KINDS",
    "MIXERS",
    "Fusion",
    "GatedFusion",
    "HParam",
    "Variant",
    "gate_init",
    "logit",
    "lr_mult",
]

Kind = Literal["fusion", "ratio", "arbiter", "baseline"]
KINDS: tuple[str, ...] = ("fusion", "ratio", "arbiter", "baseline")
MIXERS: tuple[str, ...] = ("rwkv6", "mamba2", "attention")


@dataclass(frozen=True)
class HParam:
    """A searchable hyperparameter: a closed range [low, high] and a default inside it."""

    low: float
    high: float
    default: float
    log: bool = False

    def problems(self, name: str) -> list[str]:
        """Reasons this range makes no sense (empty when it is fine)."""
        out: list[str] = []
        vals = (self.low, self.high, self.default)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in vals):
            return [f"hyperparameter '{name}' has a non-finite or non-numeric bound or default"]
        if not self.low < self.high:
            out.append(f"hyperparameter '{name}' has low={self.low} not below high={self.high}")
        if not self.low <= self.default <= self.high:
            out.append(f"hyperparameter '{name}' default {self.default} lies outside [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            out.append(f"hyperparameter '{name}' is log-scaled but low={self.low} is not positive")
        return out


def gate_init(default: float = 0.5, low: float = 0.05, high: float = 0.95) -> HParam:
    """The initial RWKV share of a gated fusion (0.3 = 30% RWKV, 70% Mamba, the seeds' 'Mamba-heavy')."""
    return HParam(low=low, high=high, default=default)


def lr_mult(default: float = 1.0, low: float = 0.1, high: float = 10.0) -> HParam:
    """Learning-rate multiplier for the Mamba-pathway parameters (the seeds' ``mamba_lr_mult``); log-uniform."""
    return HParam(low=low, high=high, default=default, log=True)


def logit(p: float) -> float:
    """Inverse sigmoid, for initialising a gate bias so that sigmoid(bias) == p."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class Fusion(nn.Module):
    """Base class of a fusion module. Subclasses implement ``forward(rwkv, mamba, x)``; see the module doc."""

    last_share: torch.Tensor | None

    def __init__(self, d_model: int, hp: Mapping[str, float]) -> None:
        super().__init__()
        self.d_model = d_model
        self.hp = dict(hp)
        self.last_share = None

    def forward(self, rwkv: torch.Tensor, mamba: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Variant:
    """The one declaration a variant file ends with (``VARIANT = Variant(...)``).

    * ``fusion``: the fusion module class, for variants that run both pathways.
    * ``mixers``: the sequence mixers each block runs; ``("rwkv6", "mamba2")`` for hybrids, one mixer for
      baselines (then ``fusion`` is None and the mixer output is used as is).
    * ``match_params``: baselines only. The model core widens the FFN of each block so that the whole model's
      parameter count matches the spec's reference variant (``gf``) as closely as it can; d_model and
      n_layer still come from the spec. This keeps a baseline from losing (or winning) on size alone.
    """

    name: str
    kind: Kind
    summary: str
    fusion: type[Fusion] | None = None
    mixers: tuple[str, ...] = ("rwkv6", "mamba2")
    hparams: Mapping[str, HParam] = field(default_factory=dict)
    match_params: bool = False

    def defaults(self) -> dict[str, float]:
        return {k: float(h.default) for k, h in self.hparams.items()}


def __getattr__(name: str) -> object:
    # Stock fusions live in arena.fusions (which imports this module); re-export them lazily to avoid a cycle.
    if name == "GatedFusion":
        from arena.fusions import GatedFusion

        return GatedFusion
    raise AttributeError(name)
