"""The shipped variants. Each file is loaded by path (``arena.runner.loader``), never imported as a module."""
