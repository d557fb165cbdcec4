"""The shipped variants. Each file is loaded by path (``arena.variants_loader``), never imported as a module."""
