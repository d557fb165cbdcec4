"""Migrations: named and ordered, run from a blank database and from a committed old one, matching the models."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from pgdb import fresh_pg_database, pg_admin_url, pg_required, pg_unavailable
from sqlalchemy import create_engine, inspect, text

from arena.core.errors import ArenaError
from arena.db import schema
from arena.db.models import Base
from arena.db.store import Store, schema_status, upgrade

V0_DUMP = Path(__file__).parent / "data" / "arena_v0.sql"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'arena.db'}"
        return
    reason = pg_unavailable(pg_admin_url())
    if reason:
        if pg_required():
            pytest.fail(reason)
        pytest.skip(reason)
    with fresh_pg_database() as pg_url:
        yield pg_url


def migrate_to(url: str, rev: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            return schema.migrate(conn, rev)
    finally:
        engine.dispose()


def test_revisions_are_named_and_ordered() -> None:
    assert schema.known_revisions() == ["0001_initial", "0002_search", "0003_basis", "0004_claims",
                                         "0005_defaults"]
    assert schema.head_revision() == "0005_defaults"
    files = sorted(p.name for p in (schema.MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert [f.removesuffix(".py") for f in files] == schema.known_revisions()  # file name = revision id, in order


def test_migrate_from_blank_then_models_match(url: str) -> None:
    with Store(url) as store:
        assert store.schema_status() == {
            "current": "0005_defaults",
            "head": "0005_defaults",
            "pending": [],
            "state": "current",
        }
    engine = create_engine(url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {t for t in tables if t.startswith("arena_")} == {
            "arena_alembic_version",
            "arena_variants",
            "arena_entries",
            "arena_specs",
            "arena_runs",
            "arena_champion_decisions",
            "arena_tournaments",
            "arena_claims",
        }
        with engine.connect() as conn:
            diff = compare_metadata(schema.migration_context(conn), Base.metadata)
        assert diff == [], f"models.py and the migrations disagree: {diff}"
    finally:
        engine.dispose()


def test_models_match_with_optuna_tables_present(url: str) -> None:
    """The include_name filter: Optuna's 12 tables and its alembic_version are not arena's to compare or drop."""
    optuna = pytest.importorskip("optuna")
    storage = optuna.storages.RDBStorage(url)
    optuna.create_study(study_name="s", storage=storage)
    storage.engine.dispose()
    Store(url).close()
    engine = create_engine(url)
    try:
        assert {"studies", "trials", "alembic_version"} <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            assert compare_metadata(schema.migration_context(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_older_schema_needs_explicit_upgrade(url: str) -> None:
    assert migrate_to(url, "0001_initial") == ["0001_initial"]
    needs = r"schema 0001_initial, this arena needs 0005_defaults: run `arena db upgrade`"
    with pytest.raises(ArenaError, match=needs):
        Store(url)
    assert schema_status(url) == {
        "current": "0001_initial",
        "head": "0005_defaults",
        "pending": ["0002_search", "0003_basis", "0004_claims", "0005_defaults"],
        "state": "pending",
    }  # refused, and left as it was
    assert upgrade(url) == ["0002_search", "0003_basis", "0004_claims", "0005_defaults"]
    assert upgrade(url) == []
    with Store(url) as store:
        assert store.schema_status()["state"] == "current"


def test_upgrade_from_committed_v0_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        raw.executescript(V0_DUMP.read_text())
    raw.close()
    url = f"sqlite:///{path}"
    with pytest.raises(ArenaError, match="arena db upgrade"):
        Store(url)
    with Store(url, upgrade=True) as store:
        assert store.schema_status()["current"] == "0005_defaults"
        assert [v.name for v in store.variants()] == ["gf", "gf_mh"]
        (spec_row,) = store.specs()
        assert spec_row.name == "smoke" and spec_row.n_runs == 3
        spec = store.spec(spec_row.hash)
        assert spec is not None and spec.name == "smoke"
        runs = store.runs(spec_row.hash)
        assert [(r.result.variant, r.result.seed, r.result.status) for r in runs] == [
            ("gf", 0, "ok"),
            ("gf", 1, "ok"),
            ("gf_mh", 0, "crashed"),
        ]
        assert runs[0].result.final_val_loss == 2.51 and runs[0].result.val_curve == [(10, 3.0), (40, 2.51)]
        assert runs[2].result.error == "RuntimeError: boom"
        assert all(r.study_name is None and r.trial_number is None for r in runs)  # the new columns exist, empty
        assert store.get_run(runs[1].key) is not None
        champion = store.champion(spec_row.hash)
        assert champion is not None and champion.by_default and champion.challenger_name == "gf"
        # What 0002 added works on the upgraded file.
        sha = store.latest_variant("gf_mh")
        assert sha is not None
        assert store.add_entry("gf_mh@tuned", sha.sha256, {"gate_init": 0.5}, study_name="s") is True
        assert store.entry("gf_mh@tuned") is not None
        # What 0005 added: a version stored before has no declared defaults until it is registered again.
        assert sha.defaults is None
        assert store.add_variant("gf_mh", sha.kind, sha.summary, sha.source, sha.sha256, sha.path,
                                 {"gate_init": 0.3}) is False  # not new, but its defaults are filled in
        assert store.variant(sha.sha256).defaults == {"gate_init": 0.3}
        store.add_variant("gf_mh", sha.kind, sha.summary, sha.source, sha.sha256, sha.path, {"gate_init": 0.9})
        assert store.variant(sha.sha256).defaults == {"gate_init": 0.3}  # once recorded, kept
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(schema.migration_context(conn), Base.metadata) == []
            assert conn.execute(text("SELECT count(*) FROM arena_runs")).scalar() == 3
    finally:
        engine.dispose()


def test_v0_dump_is_what_0001_creates(tmp_path: Path) -> None:
    """The committed dump really is revision 0001: same tables and columns as migrating a blank file to 0001."""
    fresh = tmp_path / "fresh.db"
    migrate_to(f"sqlite:///{fresh}", "0001_initial")
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as raw:
        raw.executescript(V0_DUMP.read_text())
    raw.close()

    def shape(path: Path) -> dict[str, list[tuple[str, str, int]]]:
        with sqlite3.connect(path) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")]
            out = {t: [(c[1], c[2], c[3]) for c in db.execute(f'PRAGMA table_info("{t}")')] for t in tables}
        db.close()
        return out

    assert shape(old) == shape(fresh)
