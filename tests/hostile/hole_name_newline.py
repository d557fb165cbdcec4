"""hole_name_newline — a name with a trailing newline: ``"sneaky\\n"``.

Attack: ``re.match(r"^[a-z0-9_]+$", "sneaky\\n")`` succeeds (``$`` matches before a final newline), so a
regex-only check lets it through; the newline then breaks one-line outputs (CSV/markdown leaderboards, logs) and
makes a second, different-looking registration of the name "sneaky" next to the real one.
"""

from arena.api import GatedFusion, Variant, gate_init, lr_mult

VARIANT = Variant(
    name="sneaky\n",
    kind="fusion",
    summary="Gated fusion with a sneaky name",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
