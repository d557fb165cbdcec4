"""optuna-dashboard on the search storage: run it in the foreground (``serve``) or in the background (tests).

The dashboard is started as its own process (the ``optuna-dashboard`` CLI of this Python environment) on the
same storage spec the search uses (``arena.orchestration.search.storage.open_storage``: a path is a journal
file, ``sqlite:///`` and
``postgresql…://`` are RDB, ``redis://`` the Redis journal), so it can be stopped by PID without touching the
caller. It only reads the storage; starting it never changes a study.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from arena.core.errors import ArenaError


def dashboard_argv(storage: str, host: str = "127.0.0.1", port: int = 8080) -> list[str]:
    """The command line that serves ``storage``; ArenaError if optuna-dashboard is not installed."""
    from arena.orchestration.search.storage import storage_kind

    exe = Path(sys.executable).with_name("optuna-dashboard")
    program = str(exe) if exe.exists() else shutil.which("optuna-dashboard")
    if program is None:
        raise ArenaError("optuna-dashboard is not installed in this environment: pip install optuna-dashboard")
    argv = [program, storage, "--host", host, "--port", str(port)]
    if storage_kind(storage) == "journal":  # explicit, rather than the dashboard sniffing the file's header
        argv += ["--storage-class", "JournalFileStorage"]
    return argv


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/dashboard"


def _prepare(storage: str) -> None:
    """Fail early with one line on a storage that cannot be opened (and create an empty journal file)."""
    from arena.orchestration.search.storage import open_storage

    open_storage(storage)


def serve(storage: str, host: str = "127.0.0.1", port: int = 8080, *, echo: Callable[[str], None] = print) -> int:
    """Serve the dashboard in the foreground until Ctrl-C; print the URL first. Returns the server's exit code
    (0 after Ctrl-C). Binding to a non-loopback host exposes every study to the network: say so explicitly."""
    _prepare(storage)
    argv = dashboard_argv(storage, host, port)
    echo(f"optuna-dashboard on {storage}: {url_of(host, port)}  (Ctrl-C stops it)")
    proc = subprocess.Popen(argv)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        return 0


@dataclass
class DashboardProcess:
    """A dashboard started by ``start_background``: its PID, base URL (``http://host:port``) and log file."""

    pid: int
    base_url: str
    log_path: str
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"{self.base_url}/dashboard"

    def stop(self) -> None:
        stop(self.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=1)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_background(
    storage: str, host: str = "127.0.0.1", port: int | None = None, *, wait_s: float = 30.0, log_path: str | None = None
) -> DashboardProcess:
    """Start the dashboard as a child process and return once ``GET /api/meta`` answers 200 (ArenaError, with the
    log's last line, if it exits or does not answer within ``wait_s``). Stop it with ``stop(pid)``."""
    _prepare(storage)
    port = port or free_port(host)
    base = f"http://{host}:{port}"
    log = log_path or str(Path(os.environ.get("TMPDIR", "/tmp")) / f"arena-dashboard-{port}.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(dashboard_argv(storage, host, port), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + wait_s
    while True:
        if proc.poll() is not None:
            raise ArenaError(f"optuna-dashboard exited with code {proc.returncode}: {_last_line(log)}")
        try:
            with urllib.request.urlopen(f"{base}/api/meta", timeout=2) as response:
                if response.status == 200:
                    return DashboardProcess(pid=proc.pid, base_url=base, log_path=log, proc=proc)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            stop(proc.pid)
            raise ArenaError(f"optuna-dashboard did not answer on {base} within {wait_s:g} s: {_last_line(log)}")
        time.sleep(0.2)


def _last_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"


def _gone(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def stop(pid: int, timeout_s: float = 10.0) -> bool:
    """Stop the process ``pid`` (SIGTERM, then SIGKILL after ``timeout_s``). True if it had been running."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    killed = False
    while not _gone(pid):
        if time.monotonic() > deadline:
            if killed:  # a zombie that is not our child: its parent has to reap it
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed, deadline = True, time.monotonic() + timeout_s
        time.sleep(0.05)
    return True
