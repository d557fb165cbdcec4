"""Issue #16, "bad input that still slips through": each is one line naming the flag or file and the fix, exit 1,
and nothing written (no store file, no spec row, no run); a finished run is never lost to a failed write.

Commands run in-process through ``arena.cli.main`` (``test_cli.arena``). Most cases fail before any training, so
they are cheap; the few that train use ``tiny_flags`` (6 steps).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from pathlib import Path

import pytest
import torch
from pgdb import pg_admin_url, pg_required, pg_unavailable
from sqlalchemy.engine import make_url
from test_cli import arena, assert_one_line_error, db_file, rows

from arena.core.errors import ArenaError
from arena.db.store import Store
from arena.runner.loader import builtin_dir

GF = str(builtin_dir() / "gf.py")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")

# Every command that trains, as far as its first flag; each is refused before it would write anything.
TRAINING = {
    "run": ["run", "gf"],
    "submit": ["submit", GF],
    "tournament": ["tournament", "--variants", "gf"],
    "noise": ["noise", "--measure"],
    "tune": ["tune", "gf", "--trials", "1"],
}


@pytest.fixture
def home(_isolated_arena: Path) -> Path:
    return _isolated_arena


def nothing_written(home: Path) -> None:
    assert not home.exists() or not any(home.rglob("*")), sorted(home.rglob("*"))


def timeout_flag(command: str) -> str:
    return "--trial-timeout" if command == "tune" else "--timeout"  # tune's --timeout is the study's deadline


# -- runner flags, on every training command ----------------------------------------------------------------------
@pytest.mark.parametrize("command", list(TRAINING))
@pytest.mark.parametrize(
    ("flag", "value", "fragments"),
    [
        ("--device", "cudaa", ["--device must be", "cuda:N"]),
        ("--backend", "foo", ["--backend must be", "torch_chunk"]),
        ("--timeout", "-5", ["--timeout must be a positive number of seconds", "-5"]),
        ("--timeout", "0", ["--timeout must be a positive number of seconds"]),
        ("--workers", "0", ["--workers must be at least 1"]),
        pytest.param("--device", "cuda", ["--device cuda", "no CUDA device", "--device cpu"], marks=NO_CUDA),
        pytest.param("--backend", "kernel", ["--backend kernel", "no CUDA device", "torch_chunk"], marks=NO_CUDA),
        pytest.param("--mode", "graph", ["--mode graph", "no CUDA device", "eager"], marks=NO_CUDA),
    ],
)
def test_bad_runner_flags_on_every_training_command(
    command: str, flag: str, value: str, fragments: list[str], home: Path
) -> None:
    name = timeout_flag(command) if flag == "--timeout" else flag
    assert_one_line_error(arena(*TRAINING[command], "--preset", "smoke", name, value), *fragments)
    nothing_written(home)


@pytest.mark.parametrize("command", list(TRAINING))
def test_bad_arena_backend_variable_is_refused_before_the_worker(
    command: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARENA_BACKEND", "foo")  # read by the model, in the worker: found out after training began
    assert_one_line_error(arena(*TRAINING[command], "--preset", "smoke"), "ARENA_BACKEND='foo'", "unset it")
    nothing_written(home)


def test_kernel_backend_with_device_cpu_is_refused(home: Path) -> None:
    r = arena("run", "gf", "--preset", "smoke", "--device", "cpu", "--backend", "kernel")
    assert_one_line_error(r, "--backend kernel", "--device cpu", "torch_chunk")
    nothing_written(home)


@pytest.mark.parametrize(("flag", "value"), [("--timeout", "-5"), ("--timeout", "0"), ("--trials", "0")])
def test_bad_tune_flags_write_nothing(flag: str, value: str, home: Path) -> None:
    args = ["tune", "gf", "--preset", "smoke", *(["--trials", "1"] if flag != "--trials" else []), flag, value]
    assert_one_line_error(arena(*args), flag)
    nothing_written(home)


@pytest.mark.parametrize("command", list(TRAINING))
def test_a_timeout_the_estimate_cannot_meet_is_refused(command: str, home: Path) -> None:
    """Issue #16: a limit shorter than the estimate of a run would only store `timeout` results (even a smoke run
    takes a second or two; tests/test_estimate.py has the phase2 case, where the fix names --preset smoke)."""
    flag = timeout_flag(command)
    r = arena(*TRAINING[command], "--preset", "smoke", "--device", "cpu", flag, "0.1")
    assert_one_line_error(r, f"{flag} 0.1:", "would time out", f"give {flag} 600", f"leave {flag} out")
    # The estimate needs the inspected variant (its sha, its entry's key): only inspection's own content-addressed
    # cache of checks may exist; no store, spec or run.
    written = [p for p in home.rglob("*") if p.is_file()] if home.exists() else []
    assert all(p.is_relative_to(home / "cache" / "inspections") for p in written), written


# -- output paths ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["missing-folder", "a-folder", "a-folder-name"])
def test_show_plot_path_is_checked_before_any_work(where: str, tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "figures"
    folder.mkdir()
    plot = {"missing-folder": tmp_path / "nonexistent" / "dir" / "x.png", "a-folder": folder,
            "a-folder-name": tmp_path / "figs"}[where]
    r = arena("show", "gf", "--plot", str(plot))
    assert_one_line_error(r, "--plot", str(plot))
    assert ".png" in r.error_lines[0] or "mkdir -p" in r.error_lines[0] or "create it" in r.error_lines[0]
    assert list(tmp_path.glob("*.png")) == [] and list(folder.iterdir()) == []
    assert not (tmp_path / "nonexistent").exists()
    nothing_written(home)


def test_check_output_path_helper(tmp_path: Path) -> None:
    from arena.cli.common import check_output_path

    assert check_output_path(tmp_path / "x.png", "--plot", (".png",)) == tmp_path / "x.png"
    for bad, fragment in [(tmp_path, "is a folder"), (tmp_path / "no" / "x.png", "mkdir -p"),
                          (tmp_path / "x", "ending in .png")]:
        with pytest.raises(ArenaError, match=fragment):
            check_output_path(bad, "--plot", (".png",))


def test_tune_storage_in_a_missing_folder_creates_nothing(tmp_path: Path, home: Path) -> None:
    journal = tmp_path / "nonexistent" / "dir" / "x.journal"
    r = arena("tune", "gf", "--trials", "1", "--preset", "smoke", "--storage", str(journal))
    assert_one_line_error(r, "--storage", str(journal), "mkdir -p")
    assert not (tmp_path / "nonexistent").exists()
    nothing_written(home)


# -- seeds ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["tournament", "--variants", "gf"], ["submit", GF]], ids=["tournament", "submit"])
def test_one_seed_is_refused_before_training(command: list[str], home: Path) -> None:
    assert_one_line_error(arena(*command, "--preset", "smoke", "--seeds", "1"), "--seeds 1", "at least 2 seeds",
                          "paired")
    nothing_written(home)


# -- the store ------------------------------------------------------------------------------------------------
def test_db_status_on_a_fresh_home_creates_nothing(home: Path) -> None:
    assert_one_line_error(arena("db", "status"), "no store yet", str(db_file(home)), "arena db upgrade")
    nothing_written(home)


@pytest.mark.parametrize("command", [["run", "gf", "--preset", "smoke"], ["db", "status"], ["leaderboard"]],
                         ids=["run", "db-status", "leaderboard"])
def test_text_file_as_the_store_says_the_fix(command: list[str], tmp_path: Path, home: Path) -> None:
    notes = tmp_path / "notes.txt"
    text = "not a database, just notes\n" * 100
    notes.write_text(text)
    r = arena(*command, "--db", f"sqlite:///{notes}")
    assert_one_line_error(r, "file is not a database", str(notes), "point --db")
    assert notes.read_text() == text
    nothing_written(home)


@pytest.mark.postgres
@pytest.mark.parametrize("command", [["run", "gf", "--preset", "smoke"], ["db", "status"]], ids=["run", "db-status"])
def test_missing_postgres_database_says_how_to_create_it(command: list[str], home: Path) -> None:
    why = pg_unavailable(pg_admin_url())
    if why is not None:
        if pg_required():
            pytest.fail(why)
        pytest.skip(why)
    name = f"arena_missing_{secrets.token_hex(4)}"
    url = make_url(pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    assert_one_line_error(arena(*command, "--db", url), f'database "{name}" does not exist', "createdb", name)
    nothing_written(home)


@pytest.mark.postgres
def test_read_only_postgres_database_fails_before_training(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pgdb import fresh_pg_database
    from sqlalchemy import create_engine, text

    why = pg_unavailable(pg_admin_url())
    if why is not None:
        if pg_required():
            pytest.fail(why)
        pytest.skip(why)
    monkeypatch.setattr("arena.runner.trials.run_trial", lambda *a, **k: pytest.fail("trained"))
    with fresh_pg_database() as url:
        Store(url).close()  # migrated, then made read-only (as a standby would be)
        admin = create_engine(pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{make_url(url).database}" SET default_transaction_read_only = on'))
        admin.dispose()
        r = arena("run", "gf", "--preset", "smoke", "--db", url)
        assert_one_line_error(r, "read-only transaction", "point --db at a writable one")
    assert not db_file(home).exists()  # (the variant's inspection is cached in the home: not a store write)


@pytest.mark.parametrize("command", [["run"], ["submit"], ["variants", "check"]], ids=lambda c: " ".join(c))
def test_a_folder_as_the_variant_file(command: list[str], tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "mine.py"
    folder.mkdir()
    assert_one_line_error(arena(*command, str(folder), "--preset", "smoke"), str(folder), "is a folder", ".py file")
    nothing_written(home)


def _disk_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite on a full disk: the file gets created (0 bytes), then nothing can be written to it."""

    def connect(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        Path(database).touch()
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(sqlite3.dbapi2, "connect", connect)


@pytest.mark.parametrize("command", [["db", "upgrade"], ["run", "gf", "--preset", "smoke"]], ids=["upgrade", "run"])
def test_full_disk_leaves_no_store_file(command: list[str], home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_full(monkeypatch)
    assert_one_line_error(arena(*command), "disk is full", "free some space")
    assert not [p for p in home.rglob("*") if "arena.db" in p.name]  # no 0-byte store, no temporary one
    if command[0] == "db":
        nothing_written(home)  # nor the folder made for it


def test_locked_store_fails_before_training(locked_db: Path, monkeypatch: pytest.MonkeyPatch,
                                            tiny_flags: list[str]) -> None:
    monkeypatch.setitem(Store.__init__.__kwdefaults__, "timeout_s", 1.0)  # the CLI waits 30 s: shorten it here

    def must_not_train(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although the store cannot take the result")

    monkeypatch.setattr("arena.runner.trials.run_trial", must_not_train)
    monkeypatch.setattr("arena.orchestration.execute.execute", must_not_train)
    for command in (["run", "gf"], ["tournament", "--variants", "gf"]):
        assert_one_line_error(arena(*command, *tiny_flags, "--db", f"sqlite:///{locked_db}"), "locked")
    assert rows(locked_db, "select count(*) from arena_runs") == [(0,)]
    assert rows(locked_db, "select count(*) from arena_specs") == [(0,)]


def _failing_writes(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """The next ``n`` run writes fail as a lock held past the busy timeout does."""
    real = Store._record_run
    left = {"n": n}

    def record(self: Store, *args: object, **kwargs: object) -> int:
        if left["n"] > 0:
            left["n"] -= 1
            raise ArenaError(f"database {self.display_url} is locked by another process (waited 30 s): locked")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Store, "_record_run", record)


def test_a_failed_final_write_keeps_the_run_for_the_next_command(
    home: Path, tiny_flags: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _failing_writes(monkeypatch, 1)
    r = arena("run", "gf", *tiny_flags, "--device", "cpu")
    assert_one_line_error(r, "locked", "is kept in", "the next arena command that opens this store records it")
    spooled = list((home / "spool").glob("*.json"))
    assert len(spooled) == 1 and json.loads(spooled[0].read_text())["result"]["status"] == "ok"
    assert rows(db_file(home), "select count(*) from arena_runs") == [(0,)]

    again = arena("run", "gf", *tiny_flags, "--device", "cpu")  # opening the store records it: memoized
    assert again.code == 0, again.err + again.out
    assert "recorded 1 finished run(s)" in again.err and "memoized" in again.out
    assert rows(db_file(home), "select variant_name, status from arena_runs") == [("gf", "ok")]
    assert list((home / "spool").iterdir()) == []


def test_a_store_failing_during_a_contest_is_one_line_and_loses_no_run(
    home: Path, tiny_flags: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert arena("db", "upgrade").code == 0
    _failing_writes(monkeypatch, 2)  # both seeds of the reference, measured for the noise floor
    r = arena("noise", "--measure", *tiny_flags, "--device", "cpu")
    assert_one_line_error(r, "locked", "is kept in")
    assert "Exception in thread" not in r.err + r.out and "KeyError" not in r.err
    assert len(list((home / "spool").glob("*.json"))) == 2  # the rest of the group was still recorded
    (stored,), = rows(db_file(home), "select count(*) from arena_runs")
    r = arena("noise", *tiny_flags)  # only reads, after recording what the spool kept
    assert r.code == 0 and "noise floor σ =" in r.out, r.err + r.out
    assert rows(db_file(home), "select count(*) from arena_runs") == [(stored + 2,)]
    assert list((home / "spool").iterdir()) == []


def test_a_worker_that_cannot_start_is_one_line(home: Path, tiny_flags: list[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from arena.runner import worker

    def full(self: object, *args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", "/tmp/arena-worker")

    monkeypatch.setattr(worker.Worker, "_ensure", full)  # where a worker's process is started
    r = arena("noise", "--measure", *tiny_flags, "--device", "cpu")
    assert_one_line_error(r, "No space left on device", "free some space")
    assert "Exception in thread" not in r.err + r.out


# -- checkpoints ----------------------------------------------------------------------------------------------
def test_failed_groups_leave_no_checkpoint(home: Path, tiny_flags: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A group whose machinery failed is not stored: its checkpoints (and half-written files) go too."""
    from arena.orchestration import execute
    from arena.runner.worker import MachineryFailure

    def fail(worker: object, spec: object, loaded: object, seeds: list[int], *args: object,
             checkpoint_paths: dict[int, str], **kwargs: object) -> None:
        for path in checkpoint_paths.values():
            Path(path).write_bytes(b"weights")
            Path(f"{path}.tmp-12345").write_bytes(b"half")
        raise MachineryFailure("could not write a checkpoint: No space left on device")

    monkeypatch.setattr(execute, "train_seeds", fail)
    r = arena("tournament", "--variants", "gf", *tiny_flags, "--device", "cpu")
    assert "not stored" in r.out, r.err + r.out
    assert list((home / "artifacts" / "runs").iterdir()) == []


def test_tournament_keeps_only_the_champions_checkpoints(home: Path, tiny_flags: list[str]) -> None:
    r = arena("tournament", "--variants", "gf,gpt", *tiny_flags, "--device", "cpu")
    assert r.code == 0, r.err + r.out
    db = db_file(home)
    champion = rows(db, "select challenger_sha from arena_champion_decisions where by_default = 1 or promoted = 1 "
                        "order by id desc limit 1")[0][0]
    kept = {p.stem for p in (home / "artifacts" / "runs").iterdir()}
    champion_runs = {k for (k,) in rows(db, f"select key from arena_runs where variant_sha = '{champion}'")}
    all_runs = {k for (k,) in rows(db, "select key from arena_runs where status = 'ok'")}
    assert kept and kept <= champion_runs and len(all_runs) > len(kept)
    assert list((home / "artifacts" / "champions").rglob("seed*.pt"))  # the champion's own copy


@pytest.mark.parametrize("data", ["/no/such/tinyshakespeare.txt", "{tmp}/empty"])
def test_a_bad_data_flag_fails_before_anything_is_written(data: str, home: Path, tmp_path: Path) -> None:
    # Even when every run would be memoized (the corpus is then never read), a --data naming no valid corpus is
    # refused at once: one line, exit 1, no store.
    (tmp_path / "empty").mkdir()
    r = arena("tournament", "--preset", "smoke", "--data", data.format(tmp=tmp_path))
    assert_one_line_error(r, "--data")
    assert not db_file(home).exists()
