"""The configs Triton's autotuners chose in this process, and one machine's autotune results as a portable file.

Why: FLA's and mamba-ssm's kernels pick block sizes, warps and stages by timing candidates on first use, and
kernels with different block sizes sum in a different order. On one machine arena repeats a run's bits (Triton
caches the choices on disk, and deterministic mode pins the kernels it cannot cache). On another machine, or with a
fresh cache, timing noise picks other configs: measured on two H100 leases (bench/results, 2026-11-23), 12 of 20 tuned
kernels chose differently and the same 500-step phase2 run ended 1.5e-3 apart in final val loss. So every GPU run
records a digest of the choices (equal digests: the same kernels ran), and ``arena autotune export`` / ``import``
carry one machine's choices to another, so that both compute with the same configs.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import sys
import tarfile
from pathlib import Path

from arena.core.errors import ArenaError

# Triton's cache layout: <cache dir>/<source hash>/<kernel>.autotune.json
MEMBER = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+\.autotune\.json$")


def cache_dir() -> Path:
    """Where Triton keeps its cache: ``TRITON_CACHE_DIR``, else ``~/.triton/cache`` (Triton's default)."""
    return Path(os.environ.get("TRITON_CACHE_DIR") or Path.home() / ".triton" / "cache")


def choices() -> dict[str, dict[str, str]]:
    """{kernel: {tuning key: chosen config}} over every Triton autotuner in this process that has tuned.

    Empty when Triton was never imported (a CPU run): this function imports nothing. Kernels pinned to a single
    config never tune, so they are absent (their config cannot vary). A trial runs in its own process, so there
    these are exactly the kernels of that run."""
    module = sys.modules.get("triton.runtime.autotuner")
    if module is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    for obj in gc.get_objects():
        # type(), not isinstance(): isinstance reads __class__, which some lazy proxies turn into a warning
        if issubclass(type(obj), module.Autotuner) and getattr(obj, "cache", None):
            fn = getattr(obj, "base_fn", None) or getattr(obj, "fn", None)
            name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__name__', repr(fn))}"
            out.setdefault(name, {}).update({str(k): str(v) for k, v in obj.cache.items()})
    return out


def digest(chosen: dict[str, dict[str, str]]) -> str | None:
    """A short, order-independent fingerprint of ``choices()``; None when nothing was tuned."""
    if not chosen:
        return None
    return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]


def results(cache: Path | None = None) -> list[Path]:
    """The autotune result files in a Triton cache (default: ``cache_dir()``); none if it does not exist."""
    cache = cache or cache_dir()
    return sorted(p for p in cache.glob("*/*.autotune.json") if p.is_file()) if cache.is_dir() else []


def export_cache(dest: Path, cache: Path | None = None, *, force: bool = False) -> int:
    """Write every autotune result in the Triton cache to ``dest`` (a .tar.gz); return how many."""
    cache = cache or cache_dir()
    found = results(cache)
    if not found:
        raise ArenaError(f"{cache}: no Triton autotune results there; run a GPU trial first "
                         "(or point TRITON_CACHE_DIR at the cache that has them)")
    if not dest.parent.is_dir():
        raise ArenaError(f"{dest}: its folder {dest.parent} does not exist; create it or choose another path")
    if dest.exists() and not force:
        raise ArenaError(f"{dest}: already exists; choose another path or pass --force to replace it")
    tmp = dest.with_name(dest.name + ".part")
    with tarfile.open(tmp, "w:gz") as tar:
        for p in found:
            tar.add(p, arcname=str(p.relative_to(cache)))
    tmp.replace(dest)  # whole or not at all
    return len(found)


def import_cache(src: Path, cache: Path | None = None) -> int:
    """Put the autotune results of an ``export_cache`` file into the Triton cache; return how many.

    Every member is checked before anything is written: a file that is not such an export changes nothing.
    Results for the same kernel and source replace this machine's own, which is the point: the same configs."""
    cache = cache or cache_dir()
    if not src.is_file():
        raise ArenaError(f"{src}: no such file; make one with `arena autotune export FILE` on the tuned machine")
    try:
        with tarfile.open(src, "r:*") as tar:
            members = tar.getmembers()
            files: dict[str, bytes] = {}
            for m in members:
                if not (m.isfile() and MEMBER.match(m.name)):
                    raise ArenaError(f"{src}: member '{m.name}' is not a Triton autotune result; only files made "
                                     "by `arena autotune export` can be imported")
                data = tar.extractfile(m).read()  # type: ignore[union-attr]  # a regular file, checked above
                record = json.loads(data)
                if not (isinstance(record, dict) and "key" in record and "configs_timings" in record):
                    raise ArenaError(f"{src}: '{m.name}' does not hold an autotune record (key, configs_timings)")
                files[m.name] = data
    except (tarfile.TarError, OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = (str(exc).splitlines() or [""])[0]
        raise ArenaError(f"{src}: not a readable autotune export ({type(exc).__name__}: {why}); make one with "
                         "`arena autotune export FILE`") from exc
    if not files:
        raise ArenaError(f"{src}: holds no autotune results; make one with `arena autotune export FILE`")
    for name, data in files.items():
        target = cache / name
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(data)
        part.replace(target)
    return len(files)
