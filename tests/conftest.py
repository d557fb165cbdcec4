"""Every test runs isolated: its own arena home, no ARENA_DB, XDG folders in tmp (house style 14).

Helpers that need a store import their own fixtures from their own modules; this file stays small.

Subprocesses run ``python -P`` (Python ≥ 3.11: no working directory on sys.path), so that a test run from the repo
root imports the installed arena, not the source folder ``arena/`` (which lacks arena.runner & co: pyproject maps
runner/, db/ and champions/ there only when installed).
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_arena(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """ARENA_HOME=tmp_path/home, ARENA_DB unset, XDG data/cache/config in tmp_path; returns the home."""
    home = tmp_path / "home"
    monkeypatch.setenv("ARENA_HOME", str(home))
    monkeypatch.delenv("ARENA_DB", raising=False)
    monkeypatch.setenv("ARENA_IMPORT_LIMIT_S", "15")  # a hanging variant import is cut after 15 s, not 60
    for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "xdg" / var.lower()))
    return home


# A few hundred distinct words of English-like text: enough characters for the smoke dims, made here, not downloaded.
_WORDS = (
    "the king and queen of this fair land did speak of love and war upon a summer night while "
    "good friends gathered near the castle walls to hear what news the morning brought from sea"
)


def write_corpus(path: Path, n_chars: int = 24_000, seed: int = 0) -> Path:
    """A deterministic char-level corpus of about ``n_chars`` characters (the ``text:PATH`` track)."""
    import random

    rng = random.Random(seed)
    words = _WORDS.split()
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + rng.choice(".,;!?")
        lines.append(line)
        size += len(line) + 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small corpus file shared by the session's tests."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt")


@pytest.fixture(scope="session")
def tiny_spec(corpus: Path):  # type: ignore[no-untyped-def]
    """The smoke preset cut to 6 steps, evals every 3 on 2 batches, seeds (0, 1), on the ``text:corpus`` track."""
    from arena.core.spec import PRESETS
    from arena.runner.data import spec_for_track

    base = PRESETS["smoke"].derive(
        steps=6, warmup_steps=1, eval_every=3, eval_batches=2, final_eval_batches=2, seeds=(0, 1)
    )
    return spec_for_track(base, f"text:{corpus}")



@pytest.fixture(scope="session")
def tiny_flags(corpus: Path) -> list[str]:
    """``tiny_spec`` as CLI flags (``Spec.derive``: ``--steps 6`` gives warmup_steps = 6 // 5 = 1)."""
    return ["--preset", "smoke", "--steps", "6", "--track", f"text:{corpus}", "--set", "eval_every=3",
            "--set", "eval_batches=2", "--set", "final_eval_batches=2"]


@pytest.fixture
def locked_db(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A migrated store whose SQLite file another connection holds under BEGIN EXCLUSIVE."""
    import sqlite3

    from arena.db.store import Store

    path = tmp_path / "locked.db"
    Store(f"sqlite:///{path}").close()
    holder = sqlite3.connect(path, timeout=0, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield path
    finally:
        holder.execute("ROLLBACK")
        holder.close()
