"""Where Optuna studies live and how stale trials are recovered: one storage string for `arena tune` and the dashboard.

* ``study_name(variant, spec)``: one study per (variant name, spec), e.g. ``tune/gf_mh/phase2@9e03243e``.
* ``open_storage``: a path is a journal file, ``sqlite:///`` / ``postgresql…://`` / ``mysql…://`` an RDBStorage (with
  heartbeats), ``redis://`` the Redis journal. ``default_storage``: ``optuna.journal`` next to a SQLite arena DB, or
  the arena DB's own URL on PostgreSQL (docs/search.md says why).
* ``sweep_stale_trials``: a trial left RUNNING by a dead worker of this host is failed and its params re-queued
  (journal storages; RDB storages use Optuna's heartbeats instead).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from arena.core.errors import ArenaError
from arena.core.home import arena_home
from arena.core.liveness import process_start, still_running
from arena.core.spec import Spec

HEARTBEAT_INTERVAL_S = 60
GRACE_PERIOD_S = 180
MAX_RETRY = 2  # a trial whose worker died is re-queued at most this many times


# -- names and storage ------------------------------------------------------------------------------------------
def study_name(variant_name: str, spec: Spec) -> str:
    """The study of a (variant, spec): ``tune/<variant>/<spec name>@<hash8>``."""
    return f"tune/{variant_name}/{spec.label}"


def storage_kind(storage: str) -> str:
    """``journal`` (a file path), ``redis`` (``redis://``/``rediss://``) or ``rdb`` (sqlite, postgresql, mysql)."""
    scheme = storage.split("://", 1)[0].split("+", 1)[0].lower() if "://" in storage else ""
    if scheme in ("redis", "rediss"):
        return "redis"
    if scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        return "rdb"
    if scheme:
        raise ArenaError(
            f"--storage '{storage}': unknown scheme '{scheme}://'; give a journal file path, sqlite:///PATH, "
            "postgresql+psycopg://…, or redis://…"
        )
    return "journal"


def default_storage(db_url: str) -> str:
    """The storage that goes with an arena DB URL: ``<db folder>/optuna.journal`` for SQLite (the arena home for an
    in-memory DB); the same URL for PostgreSQL and other servers (Optuna's tables live beside ``arena_*``)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from arena.db.engine import sqlite_file

    try:
        url = make_url(db_url)
    except ArgumentError:
        raise ArenaError(f"'{db_url}' is not a database URL; use sqlite:///PATH or postgresql+psycopg://…") from None
    if url.get_backend_name() != "sqlite":
        return db_url
    path = sqlite_file(db_url)
    return str((path.parent if path is not None else arena_home()) / "optuna.journal")


def check_storage(storage: str) -> None:
    """For ``--storage`` as typed (the CLI calls this before it writes anything): refuse, in one line naming the
    flag and the fix, an unknown scheme, a journal path that is a folder, or one whose folder does not exist. A
    folder the user names is not created for them (a typo would silently start a second search elsewhere); only
    folders under the arena home, arena's own, are. ``open_storage`` itself still creates a journal's folder."""
    from arena.db.engine import sqlite_file

    kind = storage_kind(storage)
    path = Path(storage).expanduser() if kind == "journal" else sqlite_file(storage)
    if path is None:  # a server: whether it answers is found out when it is opened
        return
    if path.is_dir():
        raise ArenaError(f"--storage {path} is a folder; give a journal file such as {path / 'optuna.journal'}")
    folder = path.parent
    if not folder.is_dir() and not folder.absolute().is_relative_to(arena_home().absolute()):
        raise ArenaError(f"--storage {path}: its folder {folder} does not exist; create it (mkdir -p {folder}) or "
                         "give another path")


def open_storage(storage: str) -> BaseStorage:
    """Open an Optuna storage from its one-string spec (see ``storage_kind``); ArenaError with one line if it
    cannot be opened. RDB storages get heartbeats (stale trials are failed and retried by Optuna); SQLite gets a
    30 s busy timeout. A journal file and its folder are created (``check_storage`` checks a user's path first)."""
    kind = storage_kind(storage)
    try:
        if kind == "redis":
            from optuna.storages.journal import JournalRedisBackend

            return JournalStorage(JournalRedisBackend(storage))
        if kind == "rdb":
            sqlite = storage.lower().startswith("sqlite")
            engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 30}} if sqlite else {"pool_pre_ping": True}
            with warnings.catch_warnings():  # heartbeats are "experimental" since 2.8; the docs recommend them
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    storage,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY),
                )
        path = Path(storage).expanduser()
        if path.is_dir():
            raise ArenaError(f"--storage {path} is a folder; give a journal file such as {path / 'optuna.journal'}")
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except ArenaError:
        raise
    except Exception as exc:
        reason = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise ArenaError(f"cannot open the optuna storage {storage}: {reason}") from None


def _has_heartbeat(storage: BaseStorage) -> bool:
    return isinstance(storage, RDBStorage)


@contextlib.contextmanager
def heartbeats(study: optuna.Study, trials: Sequence[optuna.Trial]) -> Iterator[None]:
    """Keep ``trials`` alive in an RDB storage while they run (what ``study.optimize`` does for its one trial: a
    search asks and tells a pack of trials itself); stale ones are failed by ``recover_stale_trials``. Journal
    storages have no heartbeats (their trials carry their owner instead)."""
    storage = study._storage
    if not isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                with contextlib.suppress(Exception):  # a blip: the next beat, well within the grace period
                    storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT_INTERVAL_S):
                return

    thread = threading.Thread(target=beat, name="arena-trial-heartbeats", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


# -- the stale-trial sweep (journal storages) -------------------------------------------------------------------
def worker_owner() -> dict[str, Any]:
    pid = os.getpid()
    return {"worker": f"{socket.gethostname()}:{pid}", "worker_start": process_start(pid)}


def _owner_dead(owner: Any, started: Any) -> bool:
    """True only for an owner on this host whose process is gone (or is a zombie, or is another process now)."""
    try:
        host, pid_text = str(owner).rsplit(":", 1)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname() or pid == os.getpid():
        return False
    return not still_running(pid, None if started is None else str(started))


def sweep_stale_trials(study: optuna.Study, max_retry: int = MAX_RETRY) -> list[int]:
    """Fail the RUNNING trials whose owner (user attr ``worker`` = host:pid) is a dead process on this host, and
    re-enqueue their params (user attrs ``retry_of``, ``retry_depth``; ``baseline`` is kept) up to ``max_retry``
    times. Safe when several processes sweep at once: only the one whose FAIL lands re-enqueues. Returns the swept
    trial numbers. Optuna's heartbeats do this for RDB storages; journal storages have none."""
    storage = study._storage
    swept: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _owner_dead(t.user_attrs.get("worker"), t.user_attrs.get("worker_start")):
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "swept", True)
            storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        except (UpdateFinishedTrialError, RuntimeError):
            continue  # another sweeper (or the owner, after all) finished it first
        swept.append(t.number)
        depth = int(t.user_attrs.get("retry_depth", 0))
        if depth < max_retry and t.params:
            attrs: dict[str, Any] = {"retry_of": t.number, "retry_depth": depth + 1}
            if t.user_attrs.get("baseline"):
                attrs["baseline"] = True
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
    return swept


def recover_stale_trials(study: optuna.Study) -> list[int]:
    if _has_heartbeat(study._storage):
        optuna.storages.fail_stale_trials(study)
        return []
    return sweep_stale_trials(study)
