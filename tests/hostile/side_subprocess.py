"""side_subprocess — gf, plus a side effect at import: starts a subprocess.

Attack (harm): a subprocess can do anything the user can — download and run code, read ~/.ssh, mine coins. The
stand-in here touches a marker file next to $ARENA_HOME and in the working directory, so a test can see it ran.
"""

import os
import subprocess
from pathlib import Path

from arena.api import GatedFusion, Variant, gate_init, lr_mult

MARKER = "pwned-by-subprocess"

_home = os.environ.get("ARENA_HOME")
for _target in ([Path(_home).parent / MARKER] if _home else []) + [Path(MARKER)]:
    subprocess.run(["touch", str(_target)], check=False)


VARIANT = Variant(
    name="helper_gate",
    kind="fusion",
    summary="Gated fusion with a helper process",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
