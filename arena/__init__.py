"""arena: a fair tournament system for small RWKV-6 ∥ Mamba-2 hybrid language-model variants.

The package is built in floors; each imports only the floors below it (docs/architecture.md, tests/test_layers.py):

4. ``arena.cli`` — the command line: parses, calls the floors below, renders.
3. ``arena.orchestration`` — tournaments (planning, execution, contests), the search, the leaderboard, the dashboard.
2. ``arena.runner`` (loading variant files, data, training loop, worker processes) and ``arena.champions``
   (statistics, promotion policy, the champion registry).
1. ``arena.model`` (the language model and its kernels) and ``arena.db`` (the store).
0. ``arena.core`` (errors, typed configs, spec, hyperparameters, run results, execution options) and ``arena.api``
   (what a variant file imports).

Importing arena touches no disk, GPU, logging configuration or RNG.
"""

__version__ = "0.1.0"
