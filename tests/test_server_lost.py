"""A child that only looks dead because arena's process server died is arena's failure, never the variant's: no
result is stored for it (2026-12-02, H200: a signal that ended the forkserver turned two clean checks still computing
into 'rejected' runs). And the stack printer's SIGUSR1 no longer ends the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from multiprocessing import forkserver

import pytest

from arena.core.options import RunOptions
from arena.runner import processes
from arena.runner.loader import builtin
from arena.runner.provenance import basis_for
from arena.runner.worker import MachineryFailure, Worker, make_task

OPTIONS = RunOptions(device="cpu", timeout_s=300)


def _kill_server() -> None:
    pid = forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)  # the server's end of each child's status pipe closes


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_child_of_a_dead_server_is_told_apart_from_one_that_exited_255_and_ended() -> None:
    proc = processes.start(time.sleep, (60.0,))
    time.sleep(0.5)
    _kill_server()
    proc.join(timeout=10)
    assert proc.exitcode == 255 and not _gone(proc.pid)  # what multiprocessing says, and what is true
    assert processes.server_lost(proc)
    for _ in range(50):
        if _gone(proc.pid):
            break
        time.sleep(0.1)
    assert _gone(proc.pid)  # server_lost ended the orphan
    done = processes.start(sys.exit, (255,))  # a server again (multiprocessing restarts it); a real exit 255
    done.join(timeout=30)
    assert done.exitcode == 255 and not processes.server_lost(done)


def test_a_run_whose_server_dies_is_a_machinery_failure_not_a_crash(tiny_spec) -> None:
    with Worker(threads=1, standby=False) as worker:
        task = make_task(tiny_spec, builtin("gf"), [0], None, OPTIONS, None, basis_for(OPTIONS, worker.env))
        killed: list[bool] = []

        def on_event(event: dict) -> None:
            if event.get("type") == "step" and not killed:
                killed.append(True)
                _kill_server()
                # The child is still computing (it would train on and report: a process outlives its server); it
                # is paused so that this worker sees what a long step shows, a child that reads as dead.
                os.kill(worker._proc.pid, signal.SIGSTOP)

        with pytest.raises(MachineryFailure, match="process server died"):
            worker.run_pack(task, on_event)
    assert killed


def test_sigusr1_prints_stacks_and_leaves_the_server_and_its_children_running(tmp_path) -> None:
    script = textwrap.dedent("""
        import os, signal, sys, time
        from multiprocessing import forkserver
        from arena.runner import processes

        def main():
            processes.stacks_on_sigusr1()
            proc = processes.start(time.sleep, (30.0,))
            time.sleep(1.0)
            os.killpg(0, signal.SIGUSR1)  # every process of the group, as bench/gpu_tournament.py asks for stacks
            time.sleep(2.0)
            server = forkserver._forkserver._forkserver_pid
            print("server", os.waitpid(server, os.WNOHANG)[0] == 0, "child", proc.is_alive(), flush=True)
            proc.kill()

        if __name__ == "__main__":
            main()
    """)
    (tmp_path / "usr1.py").write_text(script)
    out = subprocess.run([sys.executable, str(tmp_path / "usr1.py")], capture_output=True, text=True, timeout=120,
                         start_new_session=True, cwd=tmp_path)
    assert "server True child True" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "most recent call first" in out.stderr  # the stacks were printed
