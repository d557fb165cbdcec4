"""``arena db export`` / ``arena db import``: a whole store carried to another machine as one file, the copy equal
to the original (ids, runs memoized again, the champion history), on SQLite and PostgreSQL; bad files and non-empty
targets refused in one line, writing nothing."""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_store import SPEC, decision, make_result, url  # noqa: F401  (the fixture, on both backends)

from arena.core.errors import ArenaError
from arena.db.store import Store
from arena.db.transfer import read_export


@pytest.fixture
def filled(tmp_path: Path) -> Iterator[Store]:
    with Store(f"sqlite:///{tmp_path / 'source.db'}") as s:
        s.add_spec(SPEC)
        s.add_variant("gf", "fusion", "gated", "x = 1\n", "a" * 64, "variants/gf.py", {"gate_init": 0.3})
        s.record_run(make_result(0))
        s.record_run(make_result(1, status="diverged", final_val_loss=math.nan))
        s.record_decision(decision())
        yield s


def _snapshot(store: Store) -> tuple:
    runs = sorted((r.id, r.key, r.result.seed, r.result.status, r.result.val_curve) for r in store.runs(SPEC.hash))
    decisions = [(d.id, d.challenger_name, d.promoted) for d in store.decisions()]
    return runs, decisions, [(v.sha256, v.name) for v in store.variants()], [s.hash for s in store.specs()]


def test_an_imported_store_equals_the_one_exported_and_grows_past_its_ids(filled: Store, url: str,  # noqa: F811
                                                                         tmp_path: Path) -> None:
    dump = tmp_path / "study.arena.json.gz"
    counts = filled.export_to(dump)
    assert counts["arena_runs"] == 2 and counts["arena_champion_decisions"] == 1
    with Store(url) as copy:
        assert copy.import_tables(read_export(dump), dump) == counts
        assert repr(_snapshot(copy)) == repr(_snapshot(filled))  # NaN compares equal only as text
        assert copy.get_run(filled.runs(SPEC.hash)[0].key) is not None  # memoized: found again by its key
        new_id = copy.record_decision(decision(challenger_name="rf"))
        assert new_id > max(d.id for d in filled.decisions())  # PostgreSQL's sequences moved past the ids
        with pytest.raises(ArenaError, match="already holds data"):
            copy.import_tables(read_export(dump), dump)  # never merged over what is there


def test_bad_export_files_are_refused_in_one_line(tmp_path: Path, filled: Store) -> None:
    missing = tmp_path / "none.gz"
    with pytest.raises(ArenaError, match="no such file"):
        read_export(missing)
    junk = tmp_path / "junk.gz"
    junk.write_bytes(b"not gzip")
    with pytest.raises(ArenaError, match="not an arena store export"):
        read_export(junk)
    dump = tmp_path / "dump.gz"
    filled.export_to(dump)
    with gzip.open(dump, "rt") as f:
        payload = json.load(f)
    payload["schema"] = "0001_old"
    old = tmp_path / "old.gz"
    with gzip.open(old, "wt") as f:
        json.dump(payload, f)
    with pytest.raises(ArenaError, match="exported at schema 0001_old") as err:
        read_export(old)
    assert "\n" not in str(err.value)


def test_the_cli_exports_and_imports_and_a_refused_import_creates_no_store(tmp_path: Path, filled: Store) -> None:
    from typer.testing import CliRunner

    from arena.cli.app import app

    runner = CliRunner()
    dump = tmp_path / "out.json.gz"
    done = runner.invoke(app, ["db", "export", str(dump), "--db", filled.url])
    assert done.exit_code == 0, done.output
    again = runner.invoke(app, ["db", "export", str(dump), "--db", filled.url])
    assert again.exit_code != 0 and "--force" in str(again.exception)
    target = tmp_path / "copy.db"
    bad = tmp_path / "bad.gz"
    bad.write_text("x")
    refused = runner.invoke(app, ["db", "import", str(bad), "--db", f"sqlite:///{target}"])
    assert refused.exit_code != 0 and not target.exists()
    ok = runner.invoke(app, ["db", "import", str(dump), "--db", f"sqlite:///{target}"])
    assert ok.exit_code == 0, ok.output
    with Store(f"sqlite:///{target}") as copy:
        assert len(copy.runs(SPEC.hash)) == 2
