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

from arena.core.options import RunOptions

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
