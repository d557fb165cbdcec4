"""The CLI: bad input is one line, exit 1 and nothing written; every command has help; the happy paths work.

Most commands run in-process through ``arena.cli.main`` (the real entry point, which turns ArenaError into one red
line and exit 1) with stdout/stderr captured; one runs as a real subprocess to cover ``python -m arena.cli``.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import typer
from typer.testing import CliRunner

from arena.cli.app import app, main
from arena.db.store import Store
from arena.runner.loader import builtin_dir


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def arena(*args: str) -> Result:
    """Run ``arena ARGS`` in-process through main(); never raises."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err), mock.patch.object(sys, "argv", ["arena", *args]):
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return Result(code, out.getvalue(), err.getvalue())


def assert_one_line_error(r: Result, *fragments: str) -> None:
    assert r.code == 1, (r.code, r.out, r.err)
    assert len(r.error_lines) == 1, r.err
    line = r.error_lines[0]
    assert line.startswith("error:"), line
    assert "Traceback" not in r.err + r.out
    for f in fragments:
        assert f in line, line


def db_file(home: Path) -> Path:
    return home / "arena.db"


def rows(db: Path, query: str) -> list[tuple]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


@pytest.fixture
def home(_isolated_arena: Path) -> Path:
    return _isolated_arena


NON_CAUSAL = '''"""peek: looks at the future."""

import torch

from arena.api import GatedFusion, Variant, gate_init, lr_mult


class Peek(GatedFusion):
    def forward(self, rwkv, mamba, x):
        return super().forward(rwkv, mamba, x) + torch.flip(mamba, dims=[1])  # (B, T, D)


VARIANT = Variant(name="peek", kind="fusion", summary="peeks ahead", fusion=Peek,
                  hparams={"gate_init": gate_init(), "lr_mult": lr_mult()})
'''


# -- help ------------------------------------------------------------------------------------------------------
def _all_command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(cmd: Any, path: list[str]) -> None:
        paths.append(path)
        if hasattr(cmd, "commands"):  # a group (typer vendors its own click: no isinstance check)
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])

    walk(root, [])
    return paths


COMMAND_PATHS = _all_command_paths()


def test_the_expected_commands_exist() -> None:
    names = {" ".join(p) for p in COMMAND_PATHS}
    assert {"run", "submit", "tournament", "leaderboard", "show", "variants list", "variants check", "db status",
            "db upgrade", "doctor", "noise", "champions", "champions show"} <= names


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=[" ".join(p) or "arena" for p in COMMAND_PATHS])
def test_every_command_has_help(path: list[str]) -> None:
    r = CliRunner().invoke(app, [*path, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage:" in r.output
    body = r.output.split("Usage:", 1)[1]
    assert len(body.strip().splitlines()) >= 3  # a usage line plus a description and options
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    assert (cmd.help or "").strip(), f"arena {' '.join(path)} has no help text"


# -- bad input: one line, exit 1, nothing written ------------------------------------------------------------
def test_unknown_variant_suggests_and_records_nothing(home: Path, tiny_flags: list[str]) -> None:
    r = arena("run", "gfmh", *tiny_flags)
    assert_one_line_error(r, "unknown variant 'gfmh'", "did you mean 'gf_mh'", "arena variants list")
    assert not home.exists()  # the name is looked up before a store would be created


def test_unknown_tournament_variant_creates_no_store(home: Path, tiny_flags: list[str]) -> None:
    r = arena("tournament", *tiny_flags, "--variants", "gf,gff")
    assert_one_line_error(r, "--variants: unknown variant 'gff'", "did you mean 'gf'")
    assert not home.exists()


@pytest.mark.parametrize(
    "command", [["leaderboard"], ["show", "gf"], ["champions"], ["champions", "show"], ["noise", "--preset", "smoke"]]
)
def test_views_without_a_store_say_so_and_create_none(command: list[str], home: Path) -> None:
    assert_one_line_error(arena(*command), "no arena store at", "yet", "arena tournament --preset smoke")
    assert not home.exists()


def test_unknown_variant_as_a_real_subprocess(tmp_path: Path) -> None:
    env = os.environ | {"ARENA_HOME": str(tmp_path / "sub")}
    p = subprocess.run([sys.executable, "-P", "-m", "arena.cli", "run", "gfmh", "--preset", "smoke"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 1
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "did you mean 'gf_mh'" in lines[0] and "Traceback" not in p.stderr
    assert not (tmp_path / "sub" / "arena.db").exists() or rows(
        tmp_path / "sub" / "arena.db", "select count(*) from arena_runs") == [(0,)]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["run", "gf", "--preset", "smok"], ["unknown preset 'smok'", "did you mean 'smoke'"]),
        (["tournament", "--preset", "phase3"], ["unknown preset 'phase3'"]),
        (["run", "gf", "--preset", "smoke", "--steps", "0"], ["--steps", "positive"]),
        (["run", "gf", "--preset", "smoke", "--steps", "-5"], ["--steps", "positive", "-5"]),
        (["tournament", "--preset", "smoke", "--steps", "0"], ["--steps", "positive"]),
        (["tournament", "--preset", "smoke", "--seeds", "0"], ["--seeds"]),
        (["tournament", "--preset", "smoke", "--seeds", ","], ["--seeds"]),
        (["tournament", "--preset", "smoke", "--seeds", "a,b"], ["--seeds"]),
        (["run", "gf", "--preset", "smoke", "--set", "stepz=3"], ["unknown field 'stepz'", "did you mean 'steps'"]),
        (["run", "gf", "--preset", "smoke", "--set", "steps"], ["--set wants field=value"]),
        (["run", "gf", "--preset", "smoke", "--track", "wiki"], ["--track"]),
        (["run", "gf", "--preset", "smoke", "--hp", "gate_int=0.3"], ["did you mean 'gate_init'"]),
        (["run", "gf", "--preset", "smoke", "--hp", "gate_init=7"], ["outside"]),
        (["leaderboard", "--format", "xml"], ["--format"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) and v and v[0] in ("run", "tournament", "leaderboard") else "",
)
def test_bad_flags_are_one_line_and_write_nothing(args: list[str], fragments: list[str], home: Path) -> None:
    r = arena(*args)
    assert_one_line_error(r, *fragments)
    if "--hp" not in args and args[0] != "leaderboard":  # flags checked before the store is opened
        assert not db_file(home).exists()
    elif db_file(home).exists():
        assert rows(db_file(home), "select count(*) from arena_runs") == [(0,)]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [("postgresql+psycopg://nobody@127.0.0.1:1/x", "127.0.0.1"), ("notaurl://", "notaurl://"),
     ("sqlite:////", "cannot be used")],
    ids=["unreachable-postgres", "not-a-url", "sqlite-root-dir"],
)
@pytest.mark.parametrize("command", [["run", "gf", "--preset", "smoke"], ["leaderboard"], ["db", "status"]],
                         ids=["run", "leaderboard", "db-status"])
def test_wrong_db_url(url: str, fragment: str, command: list[str], home: Path) -> None:
    r = arena(*command, "--db", url)
    assert_one_line_error(r, fragment)
    assert not home.exists() or not any(home.rglob("*"))


def test_db_path_that_is_a_directory(tmp_path: Path, home: Path) -> None:
    folder = tmp_path / "adir"
    folder.mkdir()
    r = arena("leaderboard", "--db", f"sqlite:///{folder}")
    assert_one_line_error(r, "cannot be used")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", [["leaderboard"], ["run", "gf", "--preset", "smoke"], ["db", "status"],
                                     ["champions"]], ids=["leaderboard", "run", "db-status", "champions"])
def test_db_file_with_garbage_bytes_is_one_line_and_untouched(command: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "garbage.db"
    junk = bytes(range(256)) * 16
    bad.write_bytes(junk)
    r = arena(*command, "--db", f"sqlite:///{bad}")
    assert_one_line_error(r, "file is not a database")
    assert bad.read_bytes() == junk


def test_locked_db_is_one_line_and_writes_nothing(locked_db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI opens the store with the default busy timeout (30 s, no flag or env var to change it): shorten it here.
    monkeypatch.setitem(Store.__init__.__kwdefaults__, "timeout_s", 1.0)
    gf = str(builtin_dir() / "gf.py")
    r = arena("submit", gf, "--no-run", "--preset", "smoke", "--db", f"sqlite:///{locked_db}")
    assert_one_line_error(r, "locked")
    assert rows(locked_db, "select count(*) from arena_variants") == [(0,)]


def test_variants_check_bad_file(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "peek.py"
    bad.write_text(NON_CAUSAL)
    r = arena("variants", "check", str(bad), "--preset", "smoke")
    assert_one_line_error(r, str(bad), "not causal")
    broken = tmp_path / "broken.py"
    broken.write_text("from arena.api import Variant\n")
    assert_one_line_error(arena("variants", "check", str(broken)), str(broken), "no declaration")
    assert_one_line_error(arena("variants", "check", str(tmp_path / "missing.py")), "no such file")
    assert not db_file(home).exists()


def test_variants_check_good_file(home: Path) -> None:
    r = arena("variants", "check", str(builtin_dir() / "gf.py"), "--preset", "smoke")
    assert r.code == 0, r.err
    assert "gf" in r.out and "valid" in r.out
    assert not db_file(home).exists()


def test_submit_non_causal_is_rejected_and_stores_nothing(tmp_path: Path, home: Path, tiny_flags: list[str]) -> None:
    Store(Store.default_url()).close()  # an existing, empty store
    bad = tmp_path / "peek.py"
    bad.write_text(NON_CAUSAL)
    r = arena("submit", str(bad), *tiny_flags)
    assert_one_line_error(r, str(bad), "not causal")
    assert rows(db_file(home), "select count(*) from arena_variants") == [(0,)]
    assert rows(db_file(home), "select count(*) from arena_runs") == [(0,)]


def test_views_on_an_empty_store_say_what_to_do(home: Path) -> None:
    assert arena("db", "upgrade").code == 0  # an existing store with no runs
    assert_one_line_error(arena("leaderboard"), "no runs yet")
    assert_one_line_error(arena("show", "gf"), "no runs yet")
    assert_one_line_error(arena("champions", "show"), "no runs yet")
    r = arena("champions")
    assert r.code == 0 and "no champion decisions yet" in r.out


# -- happy paths -----------------------------------------------------------------------------------------------
def test_doctor() -> None:
    r = arena("doctor")
    assert r.code == 0, r.err
    assert "torch" in r.out and "RWKV-6" in r.out and "Mamba-2" in r.out


def test_variants_list() -> None:
    r = arena("variants", "list", "--preset", "smoke")
    assert r.code == 0, r.err
    for name in ("gf", "gf_mh", "gpt", "rwkv6_only", "mamba2_only"):
        assert name in r.out


def test_db_status(home: Path) -> None:
    assert_one_line_error(arena("db", "status"), "no store yet", str(db_file(home)))  # looking creates nothing
    assert not home.exists()  # (issue #16; tests/test_bad_input.py)
    up = arena("db", "upgrade")
    assert up.code == 0 and "applied:" in up.out
    r = arena("db", "status")
    assert r.code == 0 and "pending:  none" in r.out and "blank" not in r.out
    assert "already at head" in arena("db", "upgrade").out


def test_run_then_memoized_then_views(home: Path, tiny_flags: list[str], tmp_path: Path) -> None:
    r = arena("run", "gf", "--seed", "0", *tiny_flags, "--device", "cpu")
    assert r.code == 0, r.err + r.out
    assert "final val loss" in r.out and "ok" in r.out
    assert rows(db_file(home), "select variant_name, seed, status from arena_runs") == [("gf", 0, "ok")]

    again = arena("run", "gf", "--seed", "0", *tiny_flags, "--device", "cpu")
    assert again.code == 0 and "memoized" in again.out
    assert rows(db_file(home), "select count(*) from arena_runs") == [(1,)]

    as_json = arena("run", "gf", "--seed", "0", *tiny_flags, "--json")
    data = json.loads(as_json.out[as_json.out.index("{"):])
    assert data["variant"] == "gf" and data["status"] == "ok" and data["final_val_loss"] > 0

    board = arena("leaderboard", "--format", "json")
    assert board.code == 0, board.err
    parsed = json.loads(board.out)
    assert "gf" in json.dumps(parsed)
    csv = arena("leaderboard", "--format", "csv")
    assert csv.code == 0 and csv.out.splitlines()[0].startswith("league,rank,variant") and ",gf," in csv.out
    md = arena("leaderboard", "--format", "markdown")
    assert md.code == 0 and md.out.lstrip().startswith("### League default") and "| gf |" in md.out
    table = arena("leaderboard", "--format", "table")
    assert table.code == 0 and "gf" in table.out

    png = tmp_path / "out" / "curves.png"
    png.parent.mkdir()
    shown = arena("show", "gf", "--plot", str(png))
    assert shown.code == 0, shown.err
    assert png.exists() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    by_id = arena("show", "#1")
    assert by_id.code == 0 and "gf" in by_id.out
    assert_one_line_error(arena("show", "gff"), "did you mean 'gf'")
    assert_one_line_error(arena("show", "#99"), "no run #99")


@pytest.fixture(scope="module")
def tournament_home(tmp_path_factory: pytest.TempPathFactory, tiny_flags: list[str]) -> Iterator[Path]:
    """One tiny tournament (gf, gpt, hy × 2 seeds) shared by the champion/submit/noise tests."""
    home = tmp_path_factory.mktemp("tournament") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARENA_HOME", str(home))
        mp.delenv("ARENA_DB", raising=False)
        r = arena("tournament", *tiny_flags, "--seeds", "2", "--variants", "gf,gpt,hy", "--workers", "2",
                  "--device", "cpu")
        assert r.code == 0, r.err + r.out
        assert "6 to run" in r.out and "first champion" in r.out
    yield home


@pytest.fixture
def in_tournament(tournament_home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ARENA_HOME", str(tournament_home))
    return tournament_home


def test_tournament_records_every_run_and_a_champion(in_tournament: Path) -> None:
    runs = rows(db_file(in_tournament), "select variant_name, seed, status from arena_runs order by variant_name, seed")
    tournament = [r for r in runs if r[1] in (0, 1)]
    assert tournament == [(v, s, "ok") for v in ("gf", "gpt", "hy") for s in (0, 1)]
    fresh = {(v, s) for v, s, _ in runs if s not in (0, 1)}  # only the champion and candidates train fresh seeds
    confirmed = {v for v, _ in fresh} - {"gf"}
    assert {s for _, s in fresh} <= {2, 3, 4, 5} and (not fresh or "gf" in {v for v, _ in fresh})
    decisions = rows(db_file(in_tournament), "select challenger_name, by_default from arena_champion_decisions")
    assert decisions[0] == ("gf", 1) and {name for name, _ in decisions[1:]} == confirmed


def test_champions_history_and_show(in_tournament: Path) -> None:
    r = arena("champions")
    assert r.code == 0, r.err
    assert "champion history" in r.out
    show = arena("champions", "show")
    assert show.code == 0, show.err
    assert "champion of" in show.out and "artifacts:" in show.out
    for name in ("variant.py", "champion.json", ".pt"):
        assert name in show.out


def test_noise_after_a_tournament(in_tournament: Path, tiny_flags: list[str]) -> None:
    r = arena("noise", *tiny_flags, "--seeds", "2")
    assert r.code == 0, r.err + r.out
    assert "noise floor σ =" in r.out


def test_noise_not_measured_yet(home: Path, tiny_flags: list[str]) -> None:
    assert arena("db", "upgrade").code == 0
    r = arena("noise", *tiny_flags, "--seeds", "2")
    assert r.code == 1 and "not measured yet" in r.out


def test_submit_no_run_then_submit(in_tournament: Path, tmp_path: Path, tiny_flags: list[str]) -> None:
    mine = tmp_path / "mine.py"  # gf at 4x the learning rate: ≈ 0.5 nats better on every seed of the 6-step spec
    mine.write_text((builtin_dir() / "gf.py").read_text().replace('name="gf"', 'name="mine"')
                    .replace('"lr_scale": lr_scale()', '"lr_scale": lr_scale(default=4.0)'))
    db = db_file(in_tournament)
    n_runs = rows(db, "select count(*) from arena_runs")[0][0]
    r = arena("submit", str(mine), "--no-run", *tiny_flags, "--seeds", "2")
    assert r.code == 0, r.err + r.out
    assert "mine" in r.out and "registered" in r.out
    assert rows(db, "select name from arena_variants where name = 'mine'") == [("mine",)]
    assert rows(db, "select count(*) from arena_runs")[0][0] == n_runs  # --no-run runs nothing

    n_decisions = len(rows(db, "select id from arena_champion_decisions"))
    r = arena("submit", str(mine), *tiny_flags, "--seeds", "2", "--workers", "2", "--device", "cpu")
    assert r.code == 0, r.err + r.out
    assert "PROMOTED mine vs champion gf" in r.out and "confirmed on fresh seeds" in r.out, r.out
    assert len(rows(db, "select id from arena_champion_decisions")) == n_decisions + 1
    assert rows(db, "select challenger_name, promoted from arena_champion_decisions order by id desc limit 1") == [
        ("mine", 1)]
    assert rows(db, "select count(*) from arena_runs where variant_name = 'mine'")[0][0] >= 2

    clash = tmp_path / "other" / "gf.py"  # another file declaring an already registered name
    clash.parent.mkdir()
    clash.write_text(mine.read_text() + "\n# changed\n")
    assert_one_line_error(arena("submit", str(clash), "--no-run", *tiny_flags, "--seeds", "2"), "already registered")


def test_autotune_export_import_and_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`arena autotune export/import` carry the autotune choices; a bad file is one line, exit 1, nothing written."""
    tuned = tmp_path / "tuned" / "HASH"
    tuned.mkdir(parents=True)
    (tuned / "k.autotune.json").write_text(json.dumps({"key": [64], "configs_timings": []}))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "tuned"))
    r = arena("autotune", "export", str(tmp_path / "x.tgz"))
    assert r.code == 0 and "1 autotune results" in r.out, r
    assert_one_line_error(arena("autotune", "export", str(tmp_path / "x.tgz")), "x.tgz", "--force")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "fresh"))
    r = arena("autotune", "import", str(tmp_path / "x.tgz"))
    assert r.code == 0 and (tmp_path / "fresh" / "HASH" / "k.autotune.json").exists(), r
    (tmp_path / "junk.tgz").write_text("junk")
    assert_one_line_error(arena("autotune", "import", str(tmp_path / "junk.tgz")), "junk.tgz", "arena autotune export")
    assert sorted(p.name for p in (tmp_path / "fresh").rglob("*")) == ["HASH", "k.autotune.json"]
