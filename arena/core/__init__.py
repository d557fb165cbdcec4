"""Floor 0, the foundation: plain types and rules that every other floor builds on; it imports nothing above it.

``errors`` (ArenaError), ``config`` (strict frozen configs), ``home`` (where arena keeps its files), ``spec`` (the
frozen protocol), ``hparams`` (declared and resolved hyperparameters), ``variant`` (the declaration a variant file
ends with), ``fusions`` (the stock fusion modules), ``result`` (what a run returns), ``stack`` (which runs may be
paired), ``options`` (how runs execute).
"""
