"""gpt — Phase-0 baseline: causal attention (rotary positions), parameter-matched to gf."""

from arena.api import Variant

VARIANT = Variant(
    name="gpt",
    kind="baseline",
    summary="Causal multi-head attention with rotary positions, parameter-matched to gf through the FFN width",
    mixers=("attention",),
    match_params=True,
)
