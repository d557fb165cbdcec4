"""hole_name_non_ascii — a name with non-ASCII letters: "gf_mһ" with a Cyrillic shha (U+04BB) for the "h".

Attack (impersonation): ``str.isidentifier()``/``\\w`` accept it and it renders like the shipped ``gf_mh`` on every
leaderboard and dashboard, so the author's file passes for the shipped one (or buries it under a look-alike).
"""

from arena.api import GatedFusion, Variant, gate_init, lr_mult

VARIANT = Variant(
    name="gf_m\u04bb",
    kind="fusion",
    summary="Gated fusion, Mamba-heavy: RWKV share 0.3 at init",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.3), "lr_mult": lr_mult()},
)
