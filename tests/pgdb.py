"""Helpers for the tests that need a PostgreSQL database (no pytest import here; fixtures live in the test modules).

``fresh_pg_database`` creates a randomly named PostgreSQL database on the server of ``ARENA_TEST_PG_URL`` and
drops it afterwards, also when the test failed. ``pg_unavailable`` says why no server can be used (or None).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pg_admin_url() -> str:
    """The server tests create their databases on: ``$ARENA_TEST_PG_URL`` or the local default."""
    return os.environ.get("ARENA_TEST_PG_URL") or DEFAULT_PG_ADMIN_URL


def pg_required() -> bool:
    """CI sets ``ARENA_REQUIRE_PG=1``: then a missing server fails the tests instead of skipping them."""
    return os.environ.get("ARENA_REQUIRE_PG") == "1"


@cache
def pg_unavailable(admin_url: str) -> str | None:
    """None when ``admin_url`` answers and may create databases, else the reason (one line). Cached per URL."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as e:
        lines = str(getattr(e, "orig", None) or e).strip().splitlines()
        return f"PostgreSQL at {make_url(admin_url).render_as_string(hide_password=True)} unavailable: " + (
            lines[0] if lines else type(e).__name__
        )
    finally:
        engine.dispose()
    return None


@contextmanager
def fresh_pg_database(admin_url: str | None = None) -> Iterator[str]:
    """Create an empty database ``arena_test_<random>``, yield its URL, drop it (forcing out leftover sessions)."""
    admin = make_url(admin_url or pg_admin_url())
    name = f"arena_test_{secrets.token_hex(6)}"
    engine = create_engine(admin, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()
