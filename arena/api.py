"""The public variant API: everything a variant file may import (it imports only ``arena.core``).

A variant is one Python file that ends with one explicit declaration::

    VARIANT = Variant(name="gf", kind="fusion", summary="...", fusion=GatedFusion,
                      hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()})

The loader (``arena.runner.loader``) reads ``VARIANT`` from the file it loads by path; nothing is registered
globally at import. Variants never import the runner: the benchmark protocol is out of their reach. The fusion
contract is in ``arena.core.variant``'s docstring.
"""

from arena.core.fusions import GatedFusion
from arena.core.hparams import HParam, HParams, gate_init, lr_mult, lr_scale
from arena.core.variant import KINDS, MIXERS, Fusion, Variant, logit

__all__ = [
    "KINDS",
    "MIXERS",
    "Fusion",
    "GatedFusion",
    "HParam",
    "HParams",
    "Variant",
    "gate_init",
    "logit",
    "lr_mult",
    "lr_scale",
]
