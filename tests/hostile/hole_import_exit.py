"""hole_import_exit — ``raise SystemExit(0)`` at import.

Attack: SystemExit is not an Exception, so ``except Exception`` around the import lets it through: the checking
command ends at once with exit code 0 — "success" to a script or CI job that checks the exit code — without having
validated anything; in a tournament it ends the whole command.
"""

from arena.api import GatedFusion, Variant, gate_init, lr_mult

raise SystemExit(0)

VARIANT = Variant(
    name="exit_gate",
    kind="fusion",
    summary="Gated fusion that leaves early",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
