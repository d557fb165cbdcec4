"""rwkv6_only — Phase-0 baseline: the RWKV-6 pathway alone, FFN widened to the reference's parameter count.

Its FFN is the model core's GELU FFN, shared by every variant, not RWKV-6's channel-mix (squared ReLU behind a
token shift and a receptance gate): on purpose, so that against the hybrids only the sequence mixer differs.
"""

from arena.api import Variant, lr_scale

VARIANT = Variant(
    name="rwkv6_only",
    kind="baseline",
    summary="RWKV-6 time-mix alone (no Mamba), parameter-matched to gf through the FFN width",
    hparams={"lr_scale": lr_scale()},
    mixers=("rwkv6",),
)
