"""gf_mh — gated fusion started Mamba-heavy (30% RWKV share): the seeds' Phase-2 winner."""

from arena.api import GatedFusion, Variant, gate_init, lr_mult, lr_scale

VARIANT = Variant(
    name="gf_mh",
    kind="ratio",
    summary="Gated fusion with gate_init 0.3 (Mamba-heavy: 70% Mamba at init)",
    fusion=GatedFusion,
    hparams={"lr_scale": lr_scale(), "gate_init": gate_init(0.3), "lr_mult": lr_mult()},
)
