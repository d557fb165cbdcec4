"""``arena dashboard`` as a user meets it, through real processes: the objective has a name, a fresh home says
there is no study (exit 1, nothing created), and Ctrl-C or SIGTERM stop it with one line and leave nothing
listening on its port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from arena.core.spec import preset
from arena.orchestration import dashboard
from arena.orchestration.search import storage as study_storage
from arena.orchestration.search.study import OBJECTIVE_NAME, open_study
from arena.runner.loader import builtin

pytestmark = pytest.mark.timeout(300)


def _arena(*args: str, home: Path) -> subprocess.Popen[str]:
    """``arena ARGS`` in its own session, as a shell starts a foreground job (a terminal's Ctrl-C is sent to it)."""
    env = {k: v for k, v in os.environ.items() if k != "ARENA_DB"} | {"ARENA_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-P", "-m", "arena.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def _children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_until_served(proc: subprocess.Popen[str], port: int, wait_s: float = 90.0) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/meta", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"the dashboard did not answer on port {port} within {wait_s} s")


@pytest.fixture
def study_journal(tmp_path: Path) -> Path:
    """A journal with one arena-named study made by plain optuna, so without a metric name (like an old study)."""
    path = tmp_path / "optuna.journal"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name=study_storage.study_name("gf_mh", preset("smoke")),
                                storage=study_storage.open_storage(str(path)))
    study.optimize(lambda t: (t.suggest_float("gate_init", 0.05, 0.95) - 0.3) ** 2, n_trials=2)
    assert study.metric_names is None
    return path


def test_a_new_study_names_its_objective(tmp_path: Path) -> None:
    storage = study_storage.open_storage(str(tmp_path / "j.journal"))
    study = open_study(storage, "tune/gf_mh/x", False, builtin("gf_mh"), preset("smoke"), ["gate_init"], "here")
    assert study.metric_names == [OBJECTIVE_NAME] == ["tuning val loss (nats)"]


def test_a_fresh_home_says_there_is_no_study_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    proc = _arena("dashboard", "--port", str(dashboard.free_port()), home=home)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no study in" in lines[0] and "arena tune" in lines[0], err
    assert not home.exists()
    empty = tmp_path / "empty.journal"  # an existing but empty storage: the same answer
    empty.touch()
    proc = _arena("dashboard", "--storage", str(empty), home=home)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "no study in" in err, (out, err)


@pytest.fixture
def serving(study_journal: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    """``arena dashboard`` serving the journal on a free port; yields it, its port and its child pids."""
    port = dashboard.free_port()
    proc = _arena("dashboard", "--storage", str(study_journal), "--port", str(port), home=tmp_path / "home")
    children: list[int] = []
    try:
        _wait_until_served(proc, port)
        children = _children(proc.pid)
        yield proc, port, children
    finally:
        if proc.poll() is None:  # the test did not stop it: stop it as a supervisor would, then make sure
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for pid in children:  # the optuna-dashboard child runs in a process group of its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_dashboard_names_the_objective(serving: tuple[subprocess.Popen[str], int, list[int]]) -> None:
    _, port, _ = serving
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as response:
        (summary,) = json.load(response)["study_summaries"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{summary['study_id']}", timeout=10) as response:
        detail = json.load(response)
    assert detail["objective_names"] == [OBJECTIVE_NAME]  # not "Objective 0"


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_a_stop_leaves_nothing_listening(serving: tuple[subprocess.Popen[str], int, list[int]], how: str) -> None:
    proc, port, children = serving
    assert children and _listening(port)
    if how == "Ctrl-C":
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal does: the foreground job's whole group
    else:
        os.kill(proc.pid, signal.SIGTERM)  # what a supervisor does: arena alone
    out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130), (proc.returncode, out, err)
    assert "Traceback" not in out + err and "KeyboardInterrupt" not in err, err  # stderr: the child's own log
    assert out.splitlines()[-1] == f"dashboard stopped ({how})", out
    assert not _listening(port)
    assert not [pid for pid in children if Path(f"/proc/{pid}").exists()]
