"""gf_rh — gated fusion started RWKV-heavy (70% RWKV share)."""

from arena.api import GatedFusion, Variant, gate_init, lr_mult, lr_scale

VARIANT = Variant(
    name="gf_rh",
    kind="ratio",
    summary="Gated fusion with gate_init 0.7 (RWKV-heavy: 70% RWKV at init)",
    fusion=GatedFusion,
    hparams={"lr_scale": lr_scale(), "gate_init": gate_init(0.7), "lr_mult": lr_mult()},
)
