"""rwkv6_only — Phase-0 baseline: the RWKV-6 pathway alone, FFN widened to the reference's parameter count."""

from arena.api import Variant

VARIANT = Variant(
    name="rwkv6_only",
    kind="baseline",
    summary="RWKV-6 time-mix alone (no Mamba), parameter-matched to gf through the FFN width",
    mixers=("rwkv6",),
    match_params=True,
)
