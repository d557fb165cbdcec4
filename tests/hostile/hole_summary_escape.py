"""hole_summary_escape — a summary with a terminal escape sequence (ESC [2J: clear the screen).

Attack: the summary is printed by ``arena variants list``, the leaderboard and the check's own message; raw escape
sequences clear the operator's screen, move the cursor, rewrite earlier lines (e.g. paint over a rival's row or a
"not causal" error) or, on some terminals, set the window title and clipboard.
"""

from arena.api import GatedFusion, Variant, gate_init, lr_mult

VARIANT = Variant(
    name="clear_gate",
    kind="fusion",
    summary="Gated fusion \x1b[2J\x1b[H\x1b[32mchampion\x1b[0m",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
