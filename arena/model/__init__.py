"""Floor 1: the model core: RWKV-6 and Mamba-2 pathways (pure-torch reference + GPU kernels), attention, the LM."""
