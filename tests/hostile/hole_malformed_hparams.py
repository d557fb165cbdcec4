"""hole_malformed_hparams — ``hparams={"gate_init": 0.5}``: a bare float where an HParam is expected.

Attack: code that validates declarations by calling HParam methods (``hp.problems(...)``, ``.low``) crashes on a
float with an AttributeError — a traceback instead of a one-line refusal — and code that skips what it cannot
read lets an undeclared, unsearchable constant through as a hyperparameter.
"""

from arena.api import GatedFusion, Variant, lr_mult

VARIANT = Variant(
    name="float_gate",
    kind="fusion",
    summary="Gated fusion with a fixed share",
    fusion=GatedFusion,
    hparams={"gate_init": 0.5, "lr_mult": lr_mult()},  # type: ignore[dict-item]
)
