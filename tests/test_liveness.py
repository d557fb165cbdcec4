"""arena.core.liveness: the one answer every owner check (claims, trials, a child's driver, spool, dashboard) uses."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from arena.core import liveness
from arena.core.liveness import pid_exists, process_start, still_running


def test_this_process_runs_and_another_start_time_is_another_process() -> None:
    me = os.getpid()
    start = process_start(me)
    assert start is not None
    assert still_running(me, start)
    assert still_running(me, None)  # start not known: the pid is enough
    assert not still_running(me, str(int(start) + 1))  # the pid reused by a later process


def test_a_zombie_has_ended_and_a_reaped_pid_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = None
    deadline = time.monotonic() + 30
    while process_start(child.pid) is not None and time.monotonic() < deadline:  # until it is a zombie
        start = start or process_start(child.pid)
        time.sleep(0.01)
    assert pid_exists(child.pid)  # not reaped yet: the pid still exists
    assert not still_running(child.pid, start)
    child.wait()
    assert not pid_exists(child.pid)
    assert not still_running(child.pid, None)


def test_another_users_process_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(liveness.os, "kill", refused)
    assert pid_exists(1)
    # its start time still tells whether it is the owner that was recorded
    assert still_running(1, process_start(1))
    assert not still_running(1, "0")
