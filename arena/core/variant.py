"""The declaration a variant file ends with, the fusion base class, and a variant file as loaded.

Contract of a fusion module (``Fusion`` subclass):

* ``__init__(self, d_model: int, hp: HParams)`` — ``hp`` holds the variant's resolved hyperparameters (defaults, or
  the values a search chose); read them as ``hp.gate_init`` or ``hp["gate_init"]``: an undeclared name raises.
  Dimensions come from the benchmark spec.
* ``forward(self, rwkv, mamba, x) -> y`` with all three ``(B, T, D)``: ``rwkv`` and ``mamba`` are the two pathway
  outputs, ``x`` the (normed) block input. ``y`` must be causal in T: position t may only use positions ≤ t.
* For diagnostics, a fusion that has an RWKV share sets ``self.last_share`` to a detached tensor of that share (any
  shape broadcastable to (B, T, D), values in [0, 1]) during forward. ``None`` means "no gate".
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from arena.core.hparams import HParam, HParams

Kind = Literal["fusion", "ratio", "arbiter", "baseline"]
KINDS: tuple[str, ...] = ("fusion", "ratio", "arbiter", "baseline")
MIXERS: tuple[str, ...] = ("rwkv6", "mamba2", "attention")


def logit(p: float) -> float:
    """Inverse sigmoid, for initialising a gate bias so that sigmoid(bias) == p."""
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


class Fusion(nn.Module):
    """Base class of a fusion module. Subclasses implement ``forward(rwkv, mamba, x)``; see the module doc."""

    last_share: torch.Tensor | None

    def __init__(self, d_model: int, hp: HParams) -> None:
        super().__init__()
        self.d_model = d_model
        self.hp = hp
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


@dataclass(frozen=True)
class LoadedVariant:
    """A variant file as loaded: its declaration, where it came from, and the exact source it ran."""

    variant: Variant
    path: str
    source: str
    sha256: str

    @property
    def name(self) -> str:
        return self.variant.name
