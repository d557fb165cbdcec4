"""hole_import_hangs — the import never returns (``while True: pass`` at module level).

Attack (denial of service): whatever imports the file to validate or run it — ``arena variants check``, a
tournament loading its registered files — hangs for ever, holding the tournament (and the GPU) hostage.
"""

from arena.api import GatedFusion, Variant, gate_init, lr_mult

while True:
    pass

VARIANT = Variant(
    name="slow_gate",
    kind="fusion",
    summary="Gated fusion that takes its time",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
