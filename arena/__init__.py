"""arena: a fair tournament system for small RWKV-6 ∥ Mamba-2 hybrid language-model variants.

Importing arena touches no disk, GPU, logging configuration or RNG.
"""

__version__ = "0.1.0"
