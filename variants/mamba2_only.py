"""mamba2_only — Phase-0 baseline: the Mamba-2 pathway alone, FFN widened to the reference's parameter count."""

from arena.api import Variant, lr_mult, lr_scale

VARIANT = Variant(
    name="mamba2_only",
    kind="baseline",
    summary="Mamba-2 mixer alone (no RWKV), parameter-matched to gf through the FFN width",
    mixers=("mamba2",),
    hparams={"lr_scale": lr_scale(), "lr_mult": lr_mult()},
)
