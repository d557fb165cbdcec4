"""The corpus: where the tinyshakespeare file (or a ``text:PATH`` corpus) comes from, and proof that it is the one
the spec names (size and sha256, or a download into the cache that is checked the same way). Importing this module
touches no disk or network."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from arena.core.errors import ArenaError
from arena.core.spec import SHAKESPEARE_SHA256

log = logging.getLogger(__name__)

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_BYTES = 1_115_394
SHAKESPEARE_VOCAB = 65
DOWNLOAD_TIMEOUT_S = 30.0

Fetch = Callable[[str, Path, float], None]  # (url, destination file, timeout seconds); raises OSError when offline


def cache_dir() -> Path:
    """The user cache: ``$ARENA_CACHE``, else ``$XDG_CACHE_HOME/arena``, else ``~/.cache/arena`` (read at call time)."""
    if os.environ.get("ARENA_CACHE"):
        return Path(os.environ["ARENA_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "arena"
    return Path.home() / ".cache" / "arena"


def urllib_fetch(url: str, dest: Path, timeout: float) -> None:
    """Write the body of ``url`` to ``dest`` (the default fetcher; tests inject their own or point the URL local)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, dest.open("wb") as out:
        shutil.copyfileobj(response, out)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verify_shakespeare(path: Path, origin: str, fix: str | None = None) -> Path:
    """``path`` if it is the exact corpus (size and sha256), else a one-line ArenaError saying what and how to fix."""
    fix = fix or (
        f"delete or replace it with a good copy of {SHAKESPEARE_URL} (or pass --data PATH / ARENA_DATA=PATH to one)"
    )
    size, sha = path.stat().st_size, _sha256_file(path)
    if size != SHAKESPEARE_BYTES or sha != SHAKESPEARE_SHA256:
        kind = "a partial or different file" if size != SHAKESPEARE_BYTES else "a different file of the same size"
        raise ArenaError(
            f"{path} ({origin}) is {kind}: expected {SHAKESPEARE_BYTES} bytes with sha256 {SHAKESPEARE_SHA256}, "
            f"found {size} bytes with sha256 {sha}; fix: {fix}"
        )
    return path


def _file_or_folder(raw: str, origin: str) -> Path:
    """A corpus file, or ``tinyshakespeare.txt`` inside a folder; ArenaError naming ``origin`` when neither exists."""
    path = Path(raw).expanduser()
    if path.is_dir():
        path = path / SHAKESPEARE_FILE
        if not path.is_file():
            raise ArenaError(f"{origin}: folder {path.parent} holds no {SHAKESPEARE_FILE}; put the corpus there")
    elif not path.is_file():
        raise ArenaError(f"{origin}: {path} does not exist; give a file or a folder holding {SHAKESPEARE_FILE}")
    return path


def _download_shakespeare(dest: Path, fetch: Fetch) -> Path:
    """Download once into the cache: fetch to a temp file beside ``dest``, verify, then atomically rename."""
    fix = f"supply a copy: --data PATH, ARENA_DATA=PATH, or copy {SHAKESPEARE_FILE} to {dest}"
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArenaError(f"cannot create the data cache {dest.parent} ({exc}); {fix}") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{SHAKESPEARE_FILE}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        log.info("downloading %s to %s", SHAKESPEARE_URL, dest)
        try:
            fetch(SHAKESPEARE_URL, tmp, DOWNLOAD_TIMEOUT_S)
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts and refused connections are OSErrors
            reason = str(exc).replace("\n", " ")
            raise ArenaError(
                f"no copy of {SHAKESPEARE_FILE} and downloading {SHAKESPEARE_URL} failed ({reason}); {fix}"
            ) from None
        _verify_shakespeare(tmp, f"downloaded from {SHAKESPEARE_URL}", f"nothing was cached; retry, or {fix}")
        os.replace(tmp, dest)  # atomic: the cache never holds a partial file
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _read_text(path: Path) -> str:
    """The UTF-8 text of a corpus file; ArenaError (one line, naming the file) when missing, empty or not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArenaError(
            f"cannot read corpus {path}: {exc.strerror or exc}; give an existing UTF-8 text file"
        ) from None
    if not raw:
        raise ArenaError(f"corpus {path} is empty; give a non-empty UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArenaError(f"corpus {path} is not UTF-8 (bad byte at offset {exc.start}); convert it to UTF-8") from None


def text_sha256(path: str | Path) -> str:
    """sha256 of a ``text:PATH`` corpus, the value its spec records; ArenaError if missing, empty or not UTF-8."""
    path = Path(path).expanduser()
    _read_text(path)
    return _sha256_file(path)


def resolve_corpus(spec_track: str, data_flag: str | None, *, fetch: Fetch = urllib_fetch) -> Path:
    """The verified corpus file for a track.

    ``shakespeare``: ``--data`` (file or folder holding tinyshakespeare.txt), then ``$ARENA_DATA`` (file or folder),
    then ``cache_dir()/tinyshakespeare.txt``, else one download into the cache. Whatever the source, the file must
    match size and sha256 exactly, or an ArenaError says which file, what was expected vs found, and the fix.
    ``text:PATH``: PATH, which must be a non-empty UTF-8 file (``--data`` does not apply). ``mqar`` has no corpus.
    """
    if spec_track.startswith("text:"):
        if data_flag:
            raise ArenaError(f"--data applies to the shakespeare track only; track {spec_track} names its own file")
        path = Path(spec_track.removeprefix("text:")).expanduser()
        _read_text(path)
        return path
    if spec_track != "shakespeare":
        raise ArenaError(f"track '{spec_track}' has no corpus file (only shakespeare and text:PATH do)")
    if data_flag:
        return _verify_shakespeare(_file_or_folder(data_flag, "--data"), "--data")
    if os.environ.get("ARENA_DATA"):
        return _verify_shakespeare(_file_or_folder(os.environ["ARENA_DATA"], "ARENA_DATA"), "ARENA_DATA")
    cached = cache_dir() / SHAKESPEARE_FILE
    if cached.is_file():
        return _verify_shakespeare(cached, "data cache")
    return _download_shakespeare(cached, fetch)


def sha256_file(path: Path) -> str:
    return _sha256_file(path)


def read_text(path: Path) -> str:
    """The UTF-8 text of a corpus file; ArenaError if missing, empty or not UTF-8."""
    return _read_text(path)
