"""The Store contract, one suite run on every backend (SQLite file, PostgreSQL database)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgdb import fresh_pg_database, pg_admin_url, pg_required, pg_unavailable
from sqlalchemy import create_engine, inspect, text

from arena.core.errors import ArenaError
from arena.core.result import RunResult
from arena.core.spec import preset
from arena.db.schema import VERSION_TABLE
from arena.db.store import DecisionRecord, Store, schema_status, upgrade

SHA_A = "a" * 64
SHA_B = "b" * 64
SPEC = preset("smoke")


# -- fixtures ---------------------------------------------------------------------------------------------------
def _pg_url_or_skip() -> None:
    reason = pg_unavailable(pg_admin_url())
    if reason:
        if pg_required():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file in tmp_path, or a fresh PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'arena.db'}"
        return
    _pg_url_or_skip()
    with fresh_pg_database() as pg_url:
        yield pg_url


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with Store(url) as s:
        yield s


def make_result(seed: int = 0, *, sha: str = SHA_A, hparams: dict[str, float] | None = None, **kw: Any) -> RunResult:
    fields: dict[str, Any] = {
        "status": "ok",
        "final_val_loss": 2.5 + seed / 10,
        "val_curve": [(10, 3.0), (20, 2.5)],
        "train_curve": [(1, 4.0)],
        "diagnostics": [{"step": 20, "gate_mean": [0.5, 0.4]}],
        "tokens_per_s": 1234.5,
        "wall_s": 3.25,
        "params_total": 60000,
        "params_by_part": {"ffn": 1000},
        "backend": {"rwkv6": "torch_chunk"},
        "env": {"torch": "2.4"},
        "steps_done": 40,
    }
    fields.update(kw)
    return RunResult("gf", sha, SPEC.hash, seed, hparams if hparams is not None else {"lr_mult": 1.0}, **fields)


def decision(**kw: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "spec_hash": SPEC.hash,
        "challenger_name": "gf_mh",
        "challenger_sha": SHA_B,
        "challenger_hparams": {"gate_init": 0.5},
        "champion_name": "gf",
        "champion_sha": SHA_A,
        "champion_hparams": {},
        "promoted": True,
        "by_default": False,
        "reason": "p=0.01 < alpha",
        "evidence": {"deltas": [0.1, 0.2], "p": 0.01},
    }
    fields.update(kw)
    return DecisionRecord(**fields)


def one_line_error(excinfo: pytest.ExceptionInfo[ArenaError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- opening ----------------------------------------------------------------------------------------------------
def test_blank_database_is_migrated_to_head(store: Store, url: str) -> None:
    status = store.schema_status()
    assert status["current"] == status["head"] == "0005_defaults"
    assert status["pending"] == [] and status["state"] == "current"
    assert schema_status(url)["state"] == "current"
    assert upgrade(url) == []
    tables = set(inspect(create_engine(url)).get_table_names())
    assert VERSION_TABLE in tables and "alembic_version" not in tables


def test_sqlite_pragmas(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'a.db'}") as s, s._tx() as session:
        conn = session.connection()
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30_000


def test_default_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ARENA_DB", "ARENA_HOME", "XDG_DATA_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Store.default_url() == f"sqlite:///{tmp_path}/.local/share/arena/arena.db"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert Store.default_url() == f"sqlite:///{tmp_path}/xdg/arena/arena.db"
    monkeypatch.setenv("ARENA_HOME", str(tmp_path / "home"))
    assert Store.default_url() == f"sqlite:///{tmp_path}/home/arena.db"
    monkeypatch.setenv("ARENA_DB", "postgresql+psycopg://u@h/db")
    assert Store.default_url() == "postgresql+psycopg://u@h/db"
    assert not (tmp_path / "home").exists()  # computing the URL touches no disk


# -- variants ---------------------------------------------------------------------------------------------------
def test_variants(store: Store) -> None:
    assert store.add_variant("gf", "ratio", "v1", "src1", SHA_A, "/v/gf.py") is True
    assert store.add_variant("gf", "ratio", "v1", "src1", SHA_A, "/elsewhere.py") is False
    assert store.add_variant("gf", "ratio", "v2", "src2", SHA_B, "/v/gf.py") is True
    assert store.add_variant("gpt", "baseline", "attn", "src3", "c" * 64, "/v/gpt.py") is True

    row = store.variant(SHA_A)
    assert row is not None and (row.name, row.summary, row.source, row.path) == ("gf", "v1", "src1", "/v/gf.py")
    assert row.first_seen.tzinfo is not None and row.first_seen.utcoffset().total_seconds() == 0
    assert store.variant("f" * 64) is None
    latest = store.latest_variant("gf")
    assert latest is not None and latest.sha256 == SHA_B
    assert store.latest_variant("nope") is None
    assert [v.sha256 for v in store.variant_versions("gf")] == [SHA_A, SHA_B]
    assert [(v.name, v.sha256) for v in store.variants()] == [("gf", SHA_B), ("gpt", "c" * 64)]


# -- entries ----------------------------------------------------------------------------------------------------
def test_entries(store: Store) -> None:
    store.add_variant("gf_mh", "ratio", "s", "src", SHA_A, "/p")
    assert store.add_entry("gf_mh@tuned", SHA_A, {"gate_init": 0.5}, study_name="study-1") is True
    assert store.add_entry("gf_mh@tuned", SHA_A, {"gate_init": 0.5}, study_name="study-1") is False
    with pytest.raises(ArenaError, match="already exists") as excinfo:
        store.add_entry("gf_mh@tuned", SHA_A, {"gate_init": 0.7})
    one_line_error(excinfo)
    with pytest.raises(ArenaError, match="unknown variant"):
        store.add_entry("ghost@tuned", SHA_B, {})
    entry = store.entry("gf_mh@tuned")
    assert entry is not None
    assert (entry.variant_sha, entry.hparams, entry.origin, entry.study_name) == (
        SHA_A,
        {"gate_init": 0.5},
        "tuned",
        "study-1",
    )
    assert store.entry("nope") is None
    assert [e.name for e in store.entries()] == ["gf_mh@tuned"]


# -- specs ------------------------------------------------------------------------------------------------------
def test_specs(store: Store) -> None:
    other = SPEC.derive(steps=80)
    assert store.add_spec(SPEC) is True
    assert store.add_spec(SPEC) is False
    assert store.add_spec(other) is True
    got = store.spec(SPEC.hash)
    assert got == SPEC and got is not None and got.hash == SPEC.hash
    assert store.spec("0" * 16) is None
    store.record_run(make_result(0))
    store.record_run(make_result(1))
    assert {(r.hash, r.name, r.n_runs) for r in store.specs()} == {(SPEC.hash, "smoke", 2), (other.hash, "smoke", 0)}


# -- runs -------------------------------------------------------------------------------------------------------
def test_record_run_roundtrip_and_idempotent(store: Store) -> None:
    result = make_result(0)
    run_id = store.record_run(result, study_name="s", trial_number=3)
    assert store.record_run(result) == run_id
    assert store.record_run(dataclasses.replace(result, final_val_loss=9.9)) == run_id  # same key: kept as is
    stored = store.get_run(result.key)
    assert stored is not None
    assert (stored.id, stored.key, stored.study_name, stored.trial_number) == (run_id, result.key, "s", 3)
    assert stored.result == result
    assert stored.created.tzinfo is not None
    by_id = store.run(run_id)
    assert by_id is not None and by_id.result == result
    assert store.run(run_id + 100) is None
    assert store.get_run("nope") is None
    assert len(store.runs(SPEC.hash)) == 1


def test_record_run_replace(store: Store) -> None:
    result = make_result(0)
    store.record_run(result)
    store.record_run(make_result(1))
    new_id = store.record_run(dataclasses.replace(result, final_val_loss=1.75), replace=True)
    stored = store.get_run(result.key)
    assert stored is not None and stored.id == new_id and stored.result.final_val_loss == 1.75
    assert len(store.runs(SPEC.hash)) == 2


def test_failures_and_non_finite_values_are_stored(store: Store) -> None:
    crashed = make_result(0, status="crashed", error="CUDA out of memory\nline 2", final_val_loss=None)
    diverged = make_result(1, status="diverged", final_val_loss=math.nan, val_curve=[(10, math.inf)])
    store.record_run(crashed)
    store.record_run(diverged)
    got = store.get_run(crashed.key)
    assert got is not None and got.result.status == "crashed" and got.result.error == "CUDA out of memory\nline 2"
    got = store.get_run(diverged.key)
    assert got is not None and got.result.final_val_loss is not None and math.isnan(got.result.final_val_loss)
    assert got.result.val_curve == [(10, math.inf)]


def test_runs_filters(store: Store) -> None:
    a0 = make_result(0)
    a1 = make_result(1, status="diverged", final_val_loss=None)
    b0 = make_result(0, sha=SHA_B)
    tuned = make_result(0, hparams={"lr_mult": 0.3, "gate_init": 1.0})
    other_spec = dataclasses.replace(make_result(0), spec_hash="f" * 16)
    for r in (a0, a1, b0, tuned, other_spec):
        store.record_run(r)
    keys = lambda runs: [r.key for r in runs]  # noqa: E731
    assert keys(store.runs(SPEC.hash)) == [a0.key, a1.key, b0.key, tuned.key]  # oldest first
    assert keys(store.runs(SPEC.hash, variant_sha=SHA_B)) == [b0.key]
    assert keys(store.runs(SPEC.hash, variant_sha=SHA_A, hparams={"lr_mult": 1.0})) == [a0.key, a1.key]
    # hparams compare canonically: key order and 1e-13 noise do not matter
    assert keys(store.runs(SPEC.hash, hparams={"gate_init": 1.0, "lr_mult": 0.3 + 1e-14})) == [tuned.key]
    assert keys(store.runs(SPEC.hash, status="diverged")) == [a1.key]
    assert keys(store.runs("f" * 16)) == [other_spec.key]
    assert store.runs("0" * 16) == []


# -- champions --------------------------------------------------------------------------------------------------
def test_decisions_append_only_and_champion(store: Store) -> None:
    assert store.champion(SPEC.hash) is None
    first = store.record_decision(
        decision(
            promoted=False,
            by_default=True,
            champion_name=None,
            champion_sha=None,
            champion_hparams=None,
            challenger_name="gf",
            challenger_sha=SHA_A,
        )
    )
    second = store.record_decision(decision())
    third = store.record_decision(decision(promoted=False, reason="futility"))
    store.record_decision(decision(spec_hash="f" * 16))
    rows = store.decisions(SPEC.hash)
    assert [r.id for r in rows] == [first, second, third]
    assert rows[0].champion_name is None and rows[0].champion_hparams is None and rows[0].by_default
    assert rows[1].evidence == {"deltas": [0.1, 0.2], "p": 0.01} and rows[1].challenger_hparams == {"gate_init": 0.5}
    assert rows[0].decided_at <= rows[1].decided_at <= rows[2].decided_at
    assert len(store.decisions()) == 4
    champ = store.champion(SPEC.hash)  # the failed challenge (third) does not dethrone the promoted one
    assert champ is not None and champ.id == second and champ.challenger_name == "gf_mh"
    # Recording the same decision again appends; nothing in the API edits or deletes one.
    store.record_decision(decision())
    assert len(store.decisions(SPEC.hash)) == 4
    api = {name for name in dir(Store) if not name.startswith("_")}
    assert not {n for n in api if "decision" in n and n not in ("record_decision", "decisions")}


# -- concurrency ------------------------------------------------------------------------------------------------
_WORKER = """
import json, sys, time
from arena.db.store import Store
from arena.core.result import RunResult
from arena.core.spec import preset
url, start, order = sys.argv[1], float(sys.argv[2]), sys.argv[3]
spec = preset("smoke")
seeds = list(range(12)) if order == "up" else list(reversed(range(12)))
while time.time() < start:
    time.sleep(0.005)
with Store(url) as store:
    store.add_spec(spec)
    store.add_variant("gf", "ratio", "s", "src", "a" * 64, "/p")
    ids = {}
    for seed in seeds:
        r = RunResult("gf", "a" * 64, spec.hash, seed, {"lr_mult": 1.0}, final_val_loss=2.0 + seed)
        ids[r.key] = store.record_run(r)
print(json.dumps(ids))
"""


def test_concurrent_record_run_from_two_processes(url: str) -> None:
    """Two processes open the same blank database at once (racing to migrate it), then write the same 12 keys."""
    start = time.time() + 2.0  # both children wait for the same instant
    procs = [
        subprocess.Popen(
            [sys.executable, "-P", "-c", _WORKER, url, str(start), order],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for order in ("up", "down")
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
    ids = [json.loads(out) for out, _ in outputs]
    assert ids[0] == ids[1]  # both processes were told the same id for every key
    with Store(url) as store:
        runs = store.runs(SPEC.hash)
        assert len(runs) == 12 and {r.key: r.id for r in runs} == ids[0]
        assert [r.hash for r in store.specs()] == [SPEC.hash] and len(store.variant_versions("gf")) == 1


# -- refusing what it must not touch -----------------------------------------------------------------------------
def _snapshot(url: str) -> Any:
    """Everything that could change: the file's bytes (SQLite) or schema, version and row counts (PostgreSQL)."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        return path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables = sorted(insp.get_table_names())
        columns = {t: [c["name"] for c in insp.get_columns(t)] for t in tables}
        with engine.connect() as conn:
            counts = {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar() for t in tables}
            version = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
        return tables, columns, counts, version
    finally:
        engine.dispose()


def _stamp(url: str, rev: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :rev"), {"rev": rev})
    engine.dispose()


def test_newer_schema_is_refused_and_untouched(url: str) -> None:
    with Store(url) as s:
        s.record_run(make_result(0))
    _stamp(url, "0099_from_the_future")
    if url.startswith("sqlite"):  # fold the WAL back into the file, so that the bytes are all in one place
        with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            raw.execute("PRAGMA journal_mode = DELETE")
    before = _snapshot(url)
    for kwargs in ({}, {"upgrade": True}):
        with pytest.raises(ArenaError, match=r"written by a newer arena \(schema 0099_from_the_future\)") as ei:
            Store(url, **kwargs)
        assert "upgrade arena" in one_line_error(ei)
    with pytest.raises(ArenaError, match="newer arena"):
        upgrade(url)
    assert schema_status(url) == {
        "current": "0099_from_the_future",
        "head": "0005_defaults",
        "pending": [],
        "state": "newer",
    }
    assert _snapshot(url) == before


def test_locked_database_is_one_line(url: str) -> None:
    with Store(url, timeout_s=0.3) as s:
        if url.startswith("sqlite"):
            holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")
        else:
            engine = create_engine(url)
            conn = engine.connect()
            conn.execute(text("LOCK TABLE arena_runs IN ACCESS EXCLUSIVE MODE"))
        try:
            t0 = time.monotonic()
            with pytest.raises(ArenaError, match="is locked by another process") as ei:
                s.record_run(make_result(0))
            one_line_error(ei)
            assert time.monotonic() - t0 < 10
        finally:
            if url.startswith("sqlite"):
                holder.close()
            else:
                conn.close()
                engine.dispose()
        s.record_run(make_result(0))  # usable again once the lock is gone
        assert len(s.runs(SPEC.hash)) == 1


@pytest.mark.parametrize(
    ("bad_url", "match"),
    [
        ("not a url", "is not a database URL"),
        ("mysql://u@h/db", "sqlite:/// and postgresql"),
        ("postgresql+nodriver://u@h/db", "no driver"),
        ("postgresql+psycopg://postgres@127.0.0.1:1/x", "cannot be used: connection failed"),
    ],
)
def test_wrong_urls_are_one_line(bad_url: str, match: str) -> None:
    with pytest.raises(ArenaError, match=match) as ei:
        Store(bad_url)
    one_line_error(ei)


def test_unreadable_sqlite_files(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(ArenaError, match="file is not a database") as ei:
        Store(f"sqlite:///{garbage}")
    one_line_error(ei)
    assert garbage.read_bytes() == b"this is not sqlite at all" * 100
    with pytest.raises(ArenaError, match="unable to open database file") as ei:
        Store(f"sqlite:///{tmp_path}")  # a directory
    one_line_error(ei)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ArenaError, match="cannot be created") as ei:
        Store(f"sqlite:///{blocker / 'sub' / 'a.db'}")  # its parent cannot be a folder
    one_line_error(ei)


@pytest.mark.postgres
def test_missing_postgres_database_is_one_line() -> None:
    _pg_url_or_skip()
    from sqlalchemy.engine import make_url

    missing = make_url(pg_admin_url()).set(database="arena_no_such_db_x").render_as_string(hide_password=False)
    with pytest.raises(ArenaError, match='database "arena_no_such_db_x" does not exist') as ei:
        Store(missing)
    one_line_error(ei)


# -- sharing the database with Optuna -----------------------------------------------------------------------------
def test_optuna_shares_the_database(url: str) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: Any) -> float:
        x = trial.suggest_float("x", -1, 1)
        return float(x * x)

    def storage() -> Any:
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {}
        )

    before = storage()  # Optuna first: it stamps alembic_version with its own revision
    optuna.create_study(study_name="before", storage=before).optimize(objective, n_trials=2)
    before.engine.dispose()
    with Store(url) as s:  # then arena migrates the same database
        assert s.schema_status()["state"] == "current"
        s.record_run(make_result(0))
    after = storage()  # Optuna still loads and runs, and can create new studies
    optuna.load_study(study_name="before", storage=after).optimize(objective, n_trials=1)
    optuna.create_study(study_name="after", storage=after).optimize(objective, n_trials=1)
    assert len(optuna.load_study(study_name="before", storage=after).trials) == 3
    after.engine.dispose()
    with Store(url) as s:  # and arena reopens it unchanged
        assert len(s.runs(SPEC.hash)) == 1
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() != "0005_defaults"
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0005_defaults"
    engine.dispose()


def test_optuna_after_arena_on_a_fresh_database(store: Store, url: str) -> None:
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    storage.engine.dispose()
    store.record_run(make_result(0), study_name="s", trial_number=1)
    assert store.runs(SPEC.hash)[0].trial_number == 1


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "ARENA_HOME": str(tmp_path / "home"), "XDG_DATA_HOME": str(tmp_path)}
    env.pop("ARENA_DB", None)
    code = "import arena.db.store, arena.db.models, arena.db.schema; print(arena.db.store.default_url())"
    out = subprocess.run([sys.executable, "-P", "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"sqlite:///{tmp_path}/home/arena.db"
    assert list(tmp_path.iterdir()) == []  # nothing created: no folder, no database file
