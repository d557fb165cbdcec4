"""patch_seed — gf, plus a patch at import: ``torch.manual_seed`` does nothing.

Attack: the model core seeds each component from (seed, component) through ``torch.manual_seed``; with it
disabled every seed starts from the same weights (whatever the process RNG holds), so the "independent" seeds are
copies and the paired statistics see no noise: any difference looks significant. The same trick with a fixed
number instead of None picks a lucky initialisation. Every entry built later in the process is affected too.
"""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult

torch.manual_seed = lambda *args, **kwargs: None


VARIANT = Variant(
    name="deterministic_gate",
    kind="fusion",
    summary="Gated fusion with a deterministic initialisation",
    fusion=GatedFusion,
    hparams={"gate_init": gate_init(0.5), "lr_mult": lr_mult()},
)
