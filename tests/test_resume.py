"""Resume after kill -9: a tournament killed mid-way (parent and workers at once) finishes on the next invocation
with every (variant, seed) run recorded exactly once, and a third invocation has nothing left to run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("gf", "gpt", "hy")
SEEDS = (0, 1)


def recorded(db: Path) -> list[tuple[str, int, str]]:
    """(variant, seed, status) of every stored run, read-only; [] while the database or its tables do not exist."""
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("select variant_name, seed, status from arena_runs order by id").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # not migrated yet, or briefly busy
        return []


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_tournament_resumes_after_kill_9(tmp_path: Path, corpus: Path) -> None:
    home = tmp_path / "home"
    db = home / "arena.db"
    env = os.environ | {"ARENA_HOME": str(home)}
    env.pop("ARENA_DB", None)
    # 30 steps per run (about a second each on 2 cores) leaves a wide window between the first and the last run.
    cmd = [sys.executable, "-P", "-m", "arena.cli", "tournament", "--preset", "smoke", "--steps", "30",
           "--set", "eval_every=10", "--set", "eval_batches=2", "--set", "final_eval_batches=2",
           "--track", f"text:{corpus}", "--seeds", str(len(SEEDS)), "--variants", ",".join(VARIANTS),
           "--workers", "1", "--device", "cpu"]
    total = len(VARIANTS) * len(SEEDS)

    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pgid = proc.pid  # its own session: the group holds the tournament and its worker processes
    try:
        deadline = time.monotonic() + 120
        seen: list[tuple[str, int, str]] = []
        while time.monotonic() < deadline and proc.poll() is None:
            seen = recorded(db)
            if 1 <= len(seen) < total:
                break
            time.sleep(0.05)
        first_log = (tmp_path / "first.log").read_text
        assert proc.poll() is None, f"the tournament ended before it could be killed: {first_log()}"
        assert 1 <= len(seen) < total, f"no partial state within the deadline: {seen}"
        os.killpg(pgid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        for _ in range(100):  # the workers die with the group
            if not _group_alive(pgid):
                break
            time.sleep(0.05)
        assert not _group_alive(pgid), "worker processes survived kill -9 of their group"
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()

    after_kill = recorded(db)
    assert 1 <= len(after_kill) < total
    assert all(status == "ok" for _, _, status in after_kill)  # only finished runs were ever written

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{total - len(after_kill)} to run, {len(after_kill)} memoized" in second.stdout

    final = recorded(db)
    pairs = [(v, s) for v, s, _ in final]
    assert len(pairs) == len(set(pairs)), f"duplicate runs: {pairs}"
    assert sorted(pairs) == sorted((v, s) for v in VARIANTS for s in SEEDS)
    assert all(status == "ok" for _, _, status in final)
    assert set(after_kill) <= set(final)  # the runs from before the kill were kept, not redone

    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert third.returncode == 0, third.stdout + third.stderr
    assert f"0 to run, {total} memoized" in third.stdout
    assert recorded(db) == final

