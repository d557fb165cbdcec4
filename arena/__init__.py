"""arena: a fair tournament system for small RWKV-6 ∥ Mamba-2 hybrid language-model variants.

Importing arena touches no GPU, logging configuration or RNG, and reads nothing but two ``stat`` calls that tell a
source checkout from an installed copy.
"""

from pathlib import Path as _Path

__version__ = "0.1.0"

# Installed, pyproject's package-dir maps runner/, db/, champions/ and variants/ to arena.runner, arena.db, ... .
# Python started inside a source checkout (`python -m arena.cli` or `python -c` from the repo root) imports this
# arena/ from the working directory instead of the installed copy; without this line it would then miss
# arena.runner & co. Adding the checkout root to __path__ makes arena.runner resolve to <root>/runner there too.
_root = _Path(__file__).resolve().parent.parent
if (_root / "pyproject.toml").is_file() and (_root / "runner" / "__init__.py").is_file():
    __path__.append(str(_root))
del _root
