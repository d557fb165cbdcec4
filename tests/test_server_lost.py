"""A child that only looks dead because arena's process server died is arena's failure, never the variant's: no
result is stored for it (2026-12-02, H200: a signal that ended the forkserver turned two clean checks still computing
into 'rejected' runs). And the stack printer's SIGUSR1 no longer ends the server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# Killing the forkserver in pytest's own process breaks the tests after it (2026-12-02 CI: 14 failures in later
# modules), so each test that kills it runs its scenario in a fresh interpreter and reads one line it prints.
PRELUDE = textwrap.dedent("""
    import os, signal, sys, time
    from multiprocessing import forkserver

    def kill_server():
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
        time.sleep(0.5)  # the server's end of each child's status pipe closes

    def gone(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
""")


def _run_script(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "scenario.py").write_text(PRELUDE + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(tmp_path / "scenario.py"), *args], capture_output=True, text=True,
                          timeout=300, start_new_session=True, cwd=tmp_path)


def test_a_child_of_a_dead_server_is_told_apart_from_one_that_exited_255_and_ended(tmp_path: Path) -> None:
    out = _run_script(tmp_path, """
        from arena.runner import processes

        def main():
            proc = processes.start(time.sleep, (60.0,))
            time.sleep(0.5)
            kill_server()
            proc.join(timeout=10)
            looked = proc.exitcode == 255 and not gone(proc.pid)  # what multiprocessing says, and what is true
            lost = processes.server_lost(proc)
            for _ in range(50):
                if gone(proc.pid):
                    break
                time.sleep(0.1)
            ended = gone(proc.pid)  # server_lost ended the orphan
            done = processes.start(sys.exit, (255,))  # a server again (multiprocessing restarts it); a real 255
            done.join(timeout=30)
            real = done.exitcode == 255 and not processes.server_lost(done)
            print("looked", looked, "lost", lost, "ended", ended, "real", real, flush=True)

        if __name__ == "__main__":
            main()
    """)
    assert "looked True lost True ended True real True" in out.stdout, out.stdout + out.stderr[-3000:]


def test_a_run_whose_server_dies_is_a_machinery_failure_not_a_crash(tmp_path: Path, corpus: Path) -> None:
    out = _run_script(tmp_path, """
        from arena.core.options import RunOptions
        from arena.core.spec import PRESETS
        from arena.runner.data import spec_for_track
        from arena.runner.loader import builtin
        from arena.runner.provenance import basis_for
        from arena.runner.worker import MachineryFailure, Worker, make_task

        def main():
            spec = spec_for_track(PRESETS["smoke"].derive(steps=6, warmup_steps=1, eval_every=3, eval_batches=2,
                                                          final_eval_batches=2, seeds=(0, 1)), "text:" + sys.argv[1])
            options = RunOptions(device="cpu", timeout_s=300)
            killed = []
            with Worker(threads=1, standby=False) as worker:
                task = make_task(spec, builtin("gf"), [0], None, options, None, basis_for(options, worker.env))

                def on_event(event):
                    if event.get("type") == "step" and not killed:
                        killed.append(True)
                        kill_server()
                        # The child is still computing (a process outlives its server); it is paused so that this
                        # worker sees what a long step shows, a child that reads as dead.
                        os.kill(worker._proc.pid, signal.SIGSTOP)

                try:
                    worker.run_pack(task, on_event)
                    print("outcome returned", flush=True)
                except MachineryFailure as exc:
                    print("outcome machinery", "process server died" in str(exc), bool(killed), flush=True)

        if __name__ == "__main__":
            main()
    """, str(corpus))
    assert "outcome machinery True True" in out.stdout, out.stdout + out.stderr[-3000:]


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


def test_with_a_stacks_folder_each_process_writes_its_own_file(tmp_path: Path) -> None:
    # One command's processes share a stderr: a group-wide SIGUSR1 interleaved their dumps character by character.
    script = textwrap.dedent("""
        import os, signal, time
        from arena.runner import processes

        def main():
            processes.stacks_on_sigusr1()
            proc = processes.start(time.sleep, (30.0,))
            time.sleep(1.0)
            os.killpg(0, signal.SIGUSR1)
            time.sleep(2.0)
            print("child", proc.pid, flush=True)
            proc.kill()

        if __name__ == "__main__":
            main()
    """)
    (tmp_path / "usr1.py").write_text(script)
    stacks = tmp_path / "stacks"
    stacks.mkdir()
    out = subprocess.run([sys.executable, str(tmp_path / "usr1.py")], capture_output=True, text=True, timeout=120,
                         start_new_session=True, cwd=tmp_path, env=dict(os.environ, ARENA_STACKS_DIR=str(stacks)))
    child = int(out.stdout.split()[-1])
    files = {int(f.name[len("stacks-"):-len(".txt")]): f.read_text() for f in stacks.glob("stacks-*.txt")}
    assert child in files and len(files) == 2, (files.keys(), out.stderr[-2000:])
    assert files[child].startswith(f"# pid {child}") and "sleep" in files[child].splitlines()[0]
    assert all("most recent call first" in text for text in files.values())
    assert "most recent call first" not in out.stderr


def test_a_child_whose_driver_was_killed_ends_quietly(tmp_path: Path) -> None:
    # A call cut by its time limit SIGKILLs the driver: its children (clean checks, trainings) found their pipe
    # broken and printed tracebacks into the log of a command that was over (2026-12-02, H200). They end quietly.
    (tmp_path / "scenario.py").write_text(PRELUDE + textwrap.dedent("""
        from arena.runner import processes

        def sender(conn):
            conn.send("started")
            while True:  # as a child reports its progress; the driver stops reading, so the pipe fills and blocks
                conn.send("x" * 4096)

        def main():
            parent, child = processes.pipe()
            proc = processes.start(sender, (child,))
            child.close()
            parent.recv()
            print(proc.pid, flush=True)
            time.sleep(600)

        if __name__ == "__main__":
            main()
    """))
    with (tmp_path / "stderr.txt").open("w") as err:
        driver = subprocess.Popen([sys.executable, str(tmp_path / "scenario.py")], stdout=subprocess.PIPE, stderr=err,
                                  text=True, start_new_session=True, cwd=tmp_path)
        assert driver.stdout is not None
        pid = int(driver.stdout.readline())
        driver.kill()
        driver.wait(timeout=30)
        import os
        import time

        for _ in range(200):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            raise AssertionError("the orphaned child did not end")
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text()
