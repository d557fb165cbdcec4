"""``python -m arena.cli``: the same entry point as the ``arena`` command."""

from arena.cli.app import main

main()
