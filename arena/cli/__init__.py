"""Floor 4, the command line (typer): parses flags, calls the floors below, renders with rich.

``app`` builds the typer app and ``main``; ``options`` defines every shared option once; ``common`` opens stores;
the commands live in ``runs``, ``boards``, ``admin`` and ``search``; ``views``, ``render``, ``plots`` and
``progress`` draw. Nothing here decides anything the library does not decide.
"""
