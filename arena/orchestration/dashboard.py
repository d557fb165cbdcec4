"""optuna-dashboard on the search storage: run it in the foreground (``serve``) or in the background (tests).

The dashboard is started as its own process (the ``optuna-dashboard`` CLI of this Python environment) on the
same storage spec the search uses (``arena.orchestration.search.storage.open_storage``: a path is a journal
file, ``sqlite:///`` and
``postgresql…://`` are RDB, ``redis://`` the Redis journal), so it can be stopped by PID without touching the
caller. Starting it refuses a storage with no study (it would serve an empty page) and creates no file; the one
thing it writes is the objective's name on arena's studies made before they had one (``search.study.name_objective``).
In the foreground (``serve``) the dashboard runs in its own process group, which Ctrl-C or SIGTERM to arena stops.
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
from arena.core.liveness import pid_exists


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
    """Fail early with one line on a storage that cannot be opened or holds no study yet; a journal or SQLite file
    that does not exist is not created. Names the objective of arena's studies that have no name yet."""
    import optuna

    from arena.db.engine import display, sqlite_file
    from arena.orchestration.search.storage import open_storage, storage_kind
    from arena.orchestration.search.study import name_objective

    no_study = (f"no study in {display(storage)} yet, so the dashboard would be empty; make one with: "
                "arena tune VARIANT --trials N (e.g. arena tune gf_mh --trials 20), or pass --storage")
    kind = storage_kind(storage)
    if kind == "journal" and not Path(storage).expanduser().is_file():
        raise ArenaError(no_study)
    sqlite = sqlite_file(storage) if kind == "rdb" else None
    if sqlite is not None and not sqlite.exists():
        raise ArenaError(no_study)
    opened = open_storage(storage)
    studies = opened.get_all_studies()
    if not studies:
        raise ArenaError(no_study)
    for frozen in studies:
        if frozen.study_name.startswith("tune/"):
            name_objective(optuna.load_study(study_name=frozen.study_name, storage=opened))


@dataclass(frozen=True)
class Served:
    """How ``serve`` ended: stopped by ``"Ctrl-C"`` or ``"SIGTERM"`` (the dashboard's process group was stopped
    first), or, with ``stopped_by`` None, the dashboard exited by itself with ``code``."""

    code: int
    stopped_by: str | None = None


class _Terminated(Exception):
    """Raised by ``serve``'s SIGTERM handler, so that the way out stops the dashboard like Ctrl-C does."""


def serve(storage: str, host: str = "127.0.0.1", port: int = 8080, *, echo: Callable[[str], None] = print) -> Served:
    """Serve the dashboard in the foreground until Ctrl-C or SIGTERM; print the URL first. The dashboard runs in its
    own session: a terminal's Ctrl-C reaches only this process (no traceback from the child), and either signal
    stops the child's whole process group before ``serve`` returns, so nothing keeps listening on ``port``.
    Binding to a non-loopback host exposes every study to the network: say so explicitly."""
    _prepare(storage)
    argv = dashboard_argv(storage, host, port)

    def on_term(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    proc: subprocess.Popen[bytes] | None = None
    try:
        echo(f"optuna-dashboard on {storage}: {url_of(host, port)}  (Ctrl-C stops it)")
        proc = subprocess.Popen(argv, start_new_session=True)
        return Served(proc.wait())
    except KeyboardInterrupt:
        return Served(0, "Ctrl-C")
    except _Terminated:
        return Served(0, "SIGTERM")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
        if proc is not None:
            stop_group(proc)
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM to the process group led by ``proc`` (started with ``start_new_session``), SIGKILL after
    ``timeout_s``; reaps ``proc``. A group whose leader already exited and was reaped is left alone (its id may
    have been reused)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


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
    return not pid_exists(pid)


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
