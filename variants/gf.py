"""gf — gated fusion: a per-position sigmoid gate mixes the RWKV-6 and Mamba-2 outputs (the reference variant)."""

from arena.api import GatedFusion, Variant, gate_init, lr_mult, lr_scale

VARIANT = Variant(
    name="gf",
    kind="fusion",
    summary="Gated fusion: per-position, per-channel sigmoid gate from the block input, RWKV share 0.5 at init",
    fusion=GatedFusion,
    hparams={"lr_scale": lr_scale(), "gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
