"""gpt — Phase-0 baseline: causal attention (rotary positions), parameter-matched to gf."""

from arena.api import Variant, lr_scale

VARIANT = Variant(
    name="gpt",
    kind="baseline",
    summary="Causal multi-head attention with rotary positions, parameter-matched to gf through the FFN width",
    hparams={"lr_scale": lr_scale()},
    mixers=("attention",),
)
