"""Inspect variant files in worker processes, so that variant code never runs where the store is written.

``inspect_sources`` imports and checks each untrusted file in a fresh process of its own (private environment, the
static policy first, the audit hook while it imports, a time limit on each phase) and hands back plain data: the
declaration as a ``VariantInfo`` and the parameter count. arena's own shipped files (exactly as installed) share one
process. Results are cached under the arena home by (source sha256, spec hash, the checking code's digest), so a
file is checked once per spec and per arena version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from arena.core.errors import ArenaError
from arena.core.home import arena_home
from arena.core.spec import Spec
from arena.core.variant import LoadedVariant, VariantInfo
from arena.runner import processes
from arena.runner.worker import import_limit_s

CHECK_LIMIT_S = 300.0  # checking one file (builds, a few forwards, one step)
_CODE = ("policy.py", "loader.py", "check.py", "causality.py", "guard.py")


@dataclass(frozen=True)
class Inspected:
    loaded: LoadedVariant  # ``variant`` is a VariantInfo
    n_params: int


def _code_digest() -> str:
    """The inspection cache is keyed on the code that decides an inspection (the run's code and the loader and
    policy that read the file)."""
    from arena.runner.provenance import code_digest

    here = Path(__file__).parent
    own = hashlib.sha256(b"".join((here / name).read_bytes() for name in _CODE)).hexdigest()
    return hashlib.sha256((own + code_digest()).encode()).hexdigest()[:16]


def _cache_file(sha: str, spec: Spec) -> Path:
    return arena_home() / "cache" / "inspections" / f"{sha[:32]}-{spec.hash}-{_code_digest()}.json"


def inspect_sources(
    items: Sequence[tuple[str, str]], spec: Spec, *, data_flag: str | None = None, policy: bool = True,
) -> list[Inspected | ArenaError]:
    """Each ``(source, path)`` inspected against ``spec``: an ``Inspected`` or the one-line ArenaError refusing it
    (in the order given). Never runs variant code in this process."""
    from arena.runner.loader import is_shipped

    out: dict[int, Inspected | ArenaError] = {}
    todo: list[int] = []
    for i, (source, _path) in enumerate(items):
        cached = _cached(source, spec) if policy else None
        if cached is not None:
            out[i] = _with_path(cached, items[i][1], source)
        else:
            todo.append(i)
    shipped = [i for i in todo if is_shipped(items[i][0])]
    lanes = parallel_checks(len(todo))
    # arena's own files share a process per lane; an untrusted file always has one to itself.
    groups = [shipped[j::lanes] for j in range(min(lanes, len(shipped)))] + [[i] for i in todo if i not in shipped]

    threads = max(1, (os.cpu_count() or 1) // lanes)  # lanes × threads = the cores: no lane oversubscribes them

    def check(group: list[int]) -> list[Inspected | ArenaError]:
        return _run_child([items[i] for i in group], spec, data_flag, policy, threads)

    with ThreadPoolExecutor(max_workers=max(1, lanes)) as pool:  # threads only wait on their child's pipe
        for group, found_all in zip(groups, pool.map(check, groups), strict=True):
            for i, found in zip(group, found_all, strict=True):
                out[i] = found
                if isinstance(found, Inspected) and policy:
                    _store(found, spec)
    return [out[i] for i in range(len(items))]


def parallel_checks(n_files: int) -> int:
    """How many check processes run at once: one per four CPU cores (each a CPU-bound torch process given its share
    of the cores as threads: unbounded, every process would take all cores and four such crawl), at least one, at
    most one per file."""
    return max(1, min(n_files, (os.cpu_count() or 1) // 4))


def inspect_one(source: str, path: str, spec: Spec, *, data_flag: str | None = None) -> Inspected:
    """One file, inspected; its refusal raised as the ArenaError."""
    found = inspect_sources([(source, path)], spec, data_flag=data_flag)[0]
    if isinstance(found, ArenaError):
        raise found
    return found


def _not_lost(proc: Any) -> None:
    """A check process that only looks dead (its server died) refuses no file: the command fails instead."""
    if processes.server_lost(proc):
        raise processes.MachineryFailure("arena's process server died while checking the entry files; run the "
                                         "command again")


# -- cache ----------------------------------------------------------------------------------------------------------
def _cached(source: str, spec: Spec) -> Inspected | None:
    sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
    path = _cache_file(sha, spec)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        info = VariantInfo.from_dict(data["info"])
        return Inspected(LoadedVariant(info, data["path"], source, sha), int(data["n_params"]))
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        return None


def _store(found: Inspected, spec: Spec) -> None:
    path = _cache_file(found.loaded.sha256, spec)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        info = found.loaded.variant
        assert isinstance(info, VariantInfo)
        tmp.write_text(json.dumps({"info": info.to_dict(), "path": found.loaded.path, "n_params": found.n_params}))
        tmp.replace(path)
    except OSError:
        pass  # a cache that cannot be written only costs time


def _with_path(found: Inspected, path: str, source: str) -> Inspected:
    return Inspected(LoadedVariant(found.loaded.variant, path, source, found.loaded.sha256), found.n_params)


# -- the child ------------------------------------------------------------------------------------------------------
def _child(conn: Connection, items: list[tuple[str, str]], spec_dict: dict[str, Any], data_flag: str | None,
           policy: bool, threads: int | None = None) -> None:
    """In a fresh process: the data first, then a private environment, then each file (import, check)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    from arena.runner import guard
    from arena.runner.check import check_variant
    from arena.runner.data import load_track
    from arena.runner.loader import load_source

    spec = Spec.from_dict(spec_dict)
    try:
        track = load_track(spec, data_flag)
    except ArenaError:
        track = None  # no corpus at hand: the check uses random tokens of the spec's vocabulary
    guard.private_environment()
    guard.prime()
    for source, path in items:
        try:
            before = guard.snapshot()
            conn.send(("phase", "importing"))
            loaded = load_source(source, path, policy=policy)
            guard.check_untampered(before, "while importing")
            conn.send(("phase", "checking"))
            n = check_variant(loaded, spec, track)
            guard.check_untampered(before, "while being checked")
            assert not isinstance(loaded.variant, VariantInfo)
            conn.send(("ok", (VariantInfo.of(loaded.variant).to_dict(), n)))
        except ArenaError as exc:
            message = str(exc)
            conn.send(("refused", message if message.startswith(path) else f"{path}: {message}"))
        except BaseException as exc:  # anything the file raised, SystemExit included: a refusal, not our exit
            conn.send(("refused", f"{path}: {type(exc).__name__} while being checked: {' '.join(str(exc).split())}"))
    conn.close()


def _run_child(items: list[tuple[str, str]], spec: Spec, data_flag: str | None,
               policy: bool, threads: int | None = None) -> list[Inspected | ArenaError]:
    parent, child = processes.pipe()
    proc = processes.start(_child, (child, items, spec.to_dict(), data_flag, policy, threads))
    child.close()
    results: list[Inspected | ArenaError] = []
    phase, started = "starting", time.monotonic()
    try:
        while len(results) < len(items):
            source, path = items[len(results)]
            limit = import_limit_s() if phase in ("starting", "importing") else CHECK_LIMIT_S
            left = started + limit - time.monotonic()
            if left <= 0 or not parent.poll(max(0.0, min(left, 0.5))):
                if left <= 0:
                    results.append(ArenaError(f"{path}: timed out after {limit:.0f} s while {phase} the file"))
                    break
                if not proc.is_alive() and not parent.poll():
                    proc.join(timeout=5)
                    _not_lost(proc)
                    results.append(ArenaError(f"{path}: the check process exited with code {proc.exitcode} while "
                                              f"{phase} the file"))
                    break
                continue
            try:
                kind, payload = parent.recv()
            except (EOFError, OSError):
                proc.join(timeout=5)
                _not_lost(proc)
                results.append(ArenaError(f"{path}: the check process exited with code {proc.exitcode} while "
                                          f"{phase} the file"))
                break
            if kind == "phase":
                phase, started = str(payload), time.monotonic()
            elif kind == "ok":
                info, n = payload
                sha = hashlib.sha256(source.encode("utf-8")).hexdigest()
                results.append(Inspected(LoadedVariant(VariantInfo.from_dict(info), path, source, sha), int(n)))
                phase, started = "importing", time.monotonic()
            else:
                results.append(ArenaError(str(payload)))
                phase, started = "importing", time.monotonic()
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
    # A group stopped by a timeout or a dead process: the files it never reached are checked one per process.
    rest = items[len(results):]
    return results + (_run_child(rest, spec, data_flag, policy, threads) if rest else [])
