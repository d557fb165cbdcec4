"""Hyperparameters: what a variant declares (``HParam``) and the frozen values one run uses (``HParams``).

``resolve`` is the one place where declared defaults and given values meet: unknown names fail with a suggestion,
values are range-checked, and the result is frozen. Reading an undeclared name from an ``HParams`` raises
``UndeclaredHParam`` (also through ``.get``), so a misspelled name in a fusion fails when the file is checked instead
of silently turning a searched hyperparameter into a constant.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from arena.core.config import did_you_mean
from arena.core.errors import ArenaError


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
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
            return [f"hyperparameter '{name}' has a non-finite or non-numeric bound or default"]
        if not self.low < self.high:
            out.append(f"hyperparameter '{name}' has low={self.low} not below high={self.high}")
        if not self.low <= self.default <= self.high:
            out.append(f"hyperparameter '{name}' default {self.default} lies outside [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            out.append(f"hyperparameter '{name}' is log-scaled but low={self.low} is not positive")
        return out


# The searched hyperparameters that may change values, never the model's shape (the entry check holds every variant
# to it: ``runner.check``): trials that differ only in these train together as one pack.
VALUE_PARAMS: tuple[str, ...] = ("gate_init", "lr_mult", "lr_scale")


def gate_init(default: float = 0.5, low: float = 0.05, high: float = 0.95) -> HParam:
    """The initial RWKV share of a gated fusion (0.3 = 30% RWKV, 70% Mamba, the seeds' 'Mamba-heavy')."""
    return HParam(low=low, high=high, default=default)


def lr_mult(default: float = 1.0, low: float = 0.1, high: float = 10.0) -> HParam:
    """Learning-rate multiplier for the Mamba-pathway parameters (the seeds' ``mamba_lr_mult``); log-uniform."""
    return HParam(low=low, high=high, default=default, log=True)


def lr_scale(default: float = 1.0, low: float = 0.25, high: float = 4.0) -> HParam:
    """Multiplier of the whole model's learning rate (every parameter group); log-uniform. Every shipped variant
    declares it, baselines included, so a search can tune every entry's learning rate alike."""
    return HParam(low=low, high=high, default=default, log=True)


class UndeclaredHParam(ArenaError):
    """A hyperparameter was read that the variant does not declare (a typo, or a missing declaration)."""


class HParams(Mapping[str, float]):
    """The frozen hyperparameter values of one run: every declared name, nothing else.

    ``hp.gate_init`` and ``hp["gate_init"]`` read a value; an undeclared name raises ``UndeclaredHParam`` naming
    the closest declared one. ``.get`` raises too: there is no silent fallback for a name the variant never declared.
    """

    __slots__ = ("_owner", "_values")
    _values: dict[str, float]
    _owner: str

    def __init__(self, values: Mapping[str, float], owner: str = "variant") -> None:
        object.__setattr__(self, "_values", {k: float(v) for k, v in sorted(values.items())})
        object.__setattr__(self, "_owner", owner)

    def __getitem__(self, name: str) -> float:
        try:
            return self._values[name]
        except KeyError:
            declared = ", ".join(self._values) or "none"
            raise UndeclaredHParam(
                f"{self._owner} reads hyperparameter '{name}', which it does not declare"
                f"{did_you_mean(name, self._values)}; declared: {declared}"
            ) from None

    def get(self, name: str, default: object = None) -> float:
        return self[name]  # a fallback for an undeclared name would hide a typo: raise instead

    def __getattr__(self, name: str) -> float:
        if name.startswith("__"):
            raise AttributeError(name)
        return self[name]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("HParams are frozen")

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v:g}" for k, v in self._values.items())
        return f"HParams({inner})"

    def __reduce__(self) -> tuple[type[HParams], tuple[dict[str, float], str]]:
        return (HParams, (dict(self._values), self._owner))

    def to_dict(self) -> dict[str, float]:
        return dict(self._values)


class _Declares(Protocol):
    @property
    def hparams(self) -> Mapping[str, HParam]: ...


def declared_defaults(variant: _Declares) -> dict[str, float]:
    """``{name: default}`` of the hyperparameters a variant (``Variant`` or ``VariantInfo``) declares."""
    return {name: float(h.default) for name, h in variant.hparams.items()}


def resolve(declared: Mapping[str, HParam], given: Mapping[str, float] | None, owner: str) -> HParams:
    """The declared defaults overlaid with ``given``; unknown names fail with a suggestion, values must lie in their
    declared range. The only place defaults are merged."""
    values = {name: float(h.default) for name, h in declared.items()}
    for key, value in (given or {}).items():
        if key not in declared:
            raise ArenaError(f"{owner} has no hyperparameter '{key}'{did_you_mean(key, declared)}; "
                             f"it declares: {', '.join(declared) or 'none'}")
        h = declared[key]
        v = float(value)
        if not (math.isfinite(v) and h.low <= v <= h.high):
            raise ArenaError(f"{owner}: {key}={value} lies outside its declared range [{h.low}, {h.high}]")
        values[key] = v
    return HParams(values, owner)
