"""hole_lr_mult_low — declares ``lr_mult`` as HParam(low=0.0, high=10.0, default=1.0), not log-scaled.

Attack: lr_mult scales the Mamba pathway's learning rate; 0 freezes the pathway (a different model under the same
name) and a range reaching 0 lets ``arena tune`` / ``--hp lr_mult=0`` pick it. Not declaring it log-scaled
dodges the "log range must be positive" rule.
"""

from arena.api import GatedFusion, HParam, Variant, gate_init

VARIANT = Variant(
    name="frozen_mamba_gate",
    kind="fusion",
    summary="Gated fusion with a tunable Mamba learning rate",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": HParam(low=0.0, high=10.0, default=1.0)},
)
