"""The declaration a variant file ends with, the fusion base class, and a variant file as loaded.

Contract of a fusion module (``Fusion`` subclass):

* ``__init__(self, d_model: int, hp: HParams)`` — ``hp`` holds the variant's resolved hyperparameters (defaults, or
  the values a search chose); read them as ``hp.gate_init`` or ``hp["gate_init"]``: an undeclared name raises.
  Dimensions come from the benchmark spec.
* ``forward(self, rwkv, mamba, x) -> y`` with all three ``(B, T, D)``: ``rwkv`` and ``mamba`` are the two pathway
  outputs, ``x`` the (normed) block input. ``y`` must be causal in T: position t may only use positions ≤ t.
  The model calls it by name (``fusion(rwkv=..., mamba=..., x=...)``), so keep these three parameter names; the
  order of a variant's ``mixers`` then cannot swap the pathways. A hybrid's mixers are exactly rwkv6 and mamba2.
* For diagnostics the model also calls it, without autograd, with one or both pathways replaced by zeros (the
  amplitude share of each pathway in ``y``; ``arena.model.attribution``).
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
    * ``match_params``: every entry is matched to the spec's reference count by one rule (``arena.model.lm``:
      the FFN width of every block is chosen so the whole model's parameter count matches the reference variant's
      within ±0.5%; d_model and depth still come from the spec), so nobody wins or loses on size. A variant that
      cannot be matched is refused, unless its file declares ``match_params=False``: an unmatched entry, marked as
      such in every table and never crowned over a matched one.
    """

    name: str
    kind: Kind
    summary: str
    fusion: type[Fusion] | None = None
    mixers: tuple[str, ...] = ("rwkv6", "mamba2")
    hparams: Mapping[str, HParam] = field(default_factory=dict)
    match_params: bool = True


@dataclass(frozen=True)
class LoadedVariant:
    """A variant file as loaded: its declaration, where it came from, and the exact source it ran. In a worker that
    imported the file ``variant`` is the ``Variant`` itself; everywhere else it is the ``VariantInfo`` an inspection
    returned (the same fields, without the fusion class)."""

    variant: Variant | VariantInfo
    path: str
    source: str
    sha256: str

    @property
    def name(self) -> str:
        return self.variant.name


@dataclass(frozen=True)
class VariantInfo:
    """What the processes that never run variant code know of a variant: its declaration as plain data, read in a
    worker by ``arena.runner.inspect`` (``fusion`` is None: the class lives only where the code ran)."""

    name: str
    kind: Kind
    summary: str
    mixers: tuple[str, ...]
    hparams: Mapping[str, HParam]
    match_params: bool
    has_fusion: bool
    fusion: None = None

    @classmethod
    def of(cls, v: Variant) -> VariantInfo:
        return cls(name=v.name, kind=v.kind, summary=v.summary, mixers=tuple(v.mixers), hparams=dict(v.hparams),
                   match_params=v.match_params, has_fusion=v.fusion is not None)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "summary": self.summary, "mixers": list(self.mixers),
                "hparams": {k: [h.low, h.high, h.default, h.log] for k, h in self.hparams.items()},
                "match_params": self.match_params, "has_fusion": self.has_fusion}

    @classmethod
    def from_dict(cls, d: Mapping[str, object]) -> VariantInfo:
        hp = d["hparams"]
        assert isinstance(hp, dict)
        return cls(name=str(d["name"]), kind=d["kind"], summary=str(d["summary"]),  # type: ignore[arg-type]
                   mixers=tuple(d["mixers"]),  # type: ignore[arg-type]
                   hparams={k: HParam(float(v[0]), float(v[1]), float(v[2]), bool(v[3])) for k, v in hp.items()},
                   match_params=bool(d["match_params"]), has_fusion=bool(d["has_fusion"]))
