"""The frozen data protocol: corpus resolution, char tokenizer, the 90/10 split, seeded paired batches, MQAR.

Contracts every caller may rely on:

- ``train_batch(seed, step)`` is a pure function of (data, spec data fields, seed, step): the same batch on any
  machine, for every variant, in any order of calls (random access: each step seeds its own local generator).
  Nothing here touches the global RNG.
- Validation data is fixed and independent of the seed: the non-overlapping windows from the start of the val split
  (LM), or examples from a fixed val seed (MQAR).
- Targets equal ``IGNORE_INDEX`` (-100) where no loss is taken (MQAR: everywhere but the query positions), so one
  ``cross_entropy(..., ignore_index=IGNORE_INDEX)`` serves every track.
- Every tensor is int64 on the CPU; the training loop moves it to its device.

Importing this module touches no disk, network or RNG.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from arena.errors import ArenaError

from .spec import SHAKESPEARE_SHA256, Spec

log = logging.getLogger(__name__)

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_FILE = "tinyshakespeare.txt"
SHAKESPEARE_BYTES = 1_115_394
SHAKESPEARE_VOCAB = 65
DOWNLOAD_TIMEOUT_S = 30.0
IGNORE_INDEX = -100

Batch = tuple[torch.Tensor, torch.Tensor]  # (x[B, T], y[B, T]) int64
Fetch = Callable[[str, Path, float], None]  # (url, destination file, timeout seconds); raises OSError when offline


# -- corpus resolution ----------------------------------------------------------------------------------------------
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


# -- char tokenizer -------------------------------------------------------------------------------------------------
class CharVocab:
    """Character vocabulary: the sorted set of the whole corpus's characters; id = rank in code-point order."""

    def __init__(self, chars: str) -> None:
        self.chars = "".join(sorted(set(chars)))
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.int64)  # [V] sorted code points

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(text)

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Token ids [N] int64; ArenaError if ``text`` holds a character outside the vocabulary."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)  # [N] code points
        ids = np.searchsorted(self._codes, codes)  # [N]
        ids_clipped = np.minimum(ids, len(self._codes) - 1)
        if len(codes) and not np.array_equal(self._codes[ids_clipped], codes):
            bad = codes[self._codes[ids_clipped] != codes][0]
            raise ArenaError(f"character {chr(bad)!r} is not in the corpus vocabulary")
        return torch.from_numpy(ids_clipped)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def corpus_vocab_size(path: str | Path) -> int:
    """Number of distinct characters of a UTF-8 corpus file (65 for tinyshakespeare)."""
    return len(set(_read_text(Path(path).expanduser())))


# -- tracks ---------------------------------------------------------------------------------------------------------
def _stream_seed(*parts: object) -> int:
    """A 63-bit generator seed from named parts: platform-independent and decorrelated across (seed, step)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(*parts))


def _batched(x: torch.Tensor, y: torch.Tensor, batch_size: int, n_batches: int) -> list[Batch]:
    """The first ``n_batches`` batches (0 = all) of rows; the last one may hold fewer than ``batch_size`` rows."""
    rows = x.shape[0] if n_batches == 0 else min(x.shape[0], n_batches * batch_size)
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, rows, batch_size)]


class Track(ABC):
    """What the training loop sees of the data: vocabulary size, paired train batches, fixed val batches.

    Weight each val batch by ``count_targets(y)`` when averaging (a last batch may be smaller; MQAR scores only
    query positions). Tensors are shared views: do not modify them in place.
    """

    kind: str  # 'lm' | 'mqar'
    vocab_size: int
    data_sha256: str

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    @abstractmethod
    def train_batch(self, seed: int, step: int) -> Batch:
        """(x[B, T], y[B, T]) for this step: a pure function of (spec data fields, seed, step)."""

    def iter_train(self, seed: int, start: int = 0) -> Iterator[Batch]:
        """``train_batch(seed, start)``, ``train_batch(seed, start + 1)``, ... (endless)."""
        step = start
        while True:
            yield self.train_batch(seed, step)
            step += 1

    @abstractmethod
    def val_batches(self, final: bool) -> list[Batch]:
        """Fixed val batches, seed-independent: ``eval_batches`` of them, or ``final_eval_batches`` (0 = all)."""

    def val_target_count(self, final: bool) -> int:
        """Number of scored targets over ``val_batches(final)``."""
        return sum(count_targets(y) for _, y in self.val_batches(final))

    def bits_per_char(self, loss_nats: float) -> float | None:
        """Bits per character from a mean loss in nats per token (char tracks: token = char); None for MQAR."""
        return loss_nats / math.log(2) if self.kind == "lm" else None


def count_targets(y: torch.Tensor) -> int:
    """Positions of y[B, T] that carry a loss (not IGNORE_INDEX)."""
    return int((y != IGNORE_INDEX).sum())


class TokenData(Track):
    """A char-level LM corpus: train = first ``1 - val_fraction`` of the tokens, val = the contiguous rest."""

    kind = "lm"

    def __init__(self, spec: Spec, text: str, data_sha256: str) -> None:
        super().__init__(spec)
        self.vocab = CharVocab.from_text(text)
        self.vocab_size = len(self.vocab)
        self.data_sha256 = data_sha256
        tokens = self.vocab.encode(text)  # [N]
        n_train = int(len(tokens) * (1 - spec.val_fraction))
        self.train = tokens[:n_train]  # [N_train]
        self.val = tokens[n_train:]  # [N_val]
        T = spec.seq_len
        n_windows = (len(self.val) - 1) // T
        if len(self.train) <= T or n_windows < 1:
            raise ArenaError(
                f"corpus too short for seq_len {T}: {len(self.train)} train and {len(self.val)} val tokens; "
                f"use a longer corpus or a smaller --seq-len"
            )
        self.val_x = self.val[: n_windows * T].view(n_windows, T)  # [W, T]
        self.val_y = self.val[1 : n_windows * T + 1].view(n_windows, T)  # [W, T]

    @property
    def n_train_tokens(self) -> int:
        return len(self.train)

    @property
    def n_val_tokens(self) -> int:
        return len(self.val)

    def train_offsets(self, seed: int, step: int) -> torch.Tensor:
        """Window start offsets [B] into the train split, uniform over every full (x, y) window."""
        g = _generator("lm-train", seed, step)
        return torch.randint(0, len(self.train) - self.spec.seq_len, (self.spec.batch_size,), generator=g)  # [B]

    def train_batch(self, seed: int, step: int) -> Batch:
        idx = self.train_offsets(seed, step)[:, None] + torch.arange(self.spec.seq_len + 1)[None, :]  # [B, T+1]
        chunk = self.train[idx]  # [B, T+1]
        return chunk[:, :-1], chunk[:, 1:]  # [B, T], [B, T]

    def val_batches(self, final: bool) -> list[Batch]:
        n = self.spec.final_eval_batches if final else self.spec.eval_batches
        return _batched(self.val_x, self.val_y, self.spec.batch_size, n)


def mqar_examples(spec: Spec, n: int, g: torch.Generator) -> Batch:
    """``n`` MQAR examples (x[n, T], y[n, T]) from ``g`` (zoology-style multi-query associative recall).

    Layout: x = k1 v1 k2 v2 ... kD vD, then 0 filler in which every key is queried once, in random order, at a
    random even offset p (x[p] = key, x[p + 1] = its value). Keys come from 1..V/2-1 (distinct), values from
    V/2..V-1 (distinct); 0 is the filler. y[p] = the value at each query position, IGNORE_INDEX everywhere else.
    """
    V, D, T = spec.mqar_vocab, spec.mqar_kv_pairs, spec.seq_len
    n_slots = (T + 1 - 2 * D) // 2  # even query offsets p in [2D, T-1]
    if D < 1 or D > V // 2 - 1 or n_slots < D:
        raise ArenaError(
            f"mqar needs 1 <= mqar_kv_pairs <= mqar_vocab/2 - 1 and seq_len >= 4*mqar_kv_pairs - 1; "
            f"got mqar_kv_pairs={D}, mqar_vocab={V}, seq_len={T}"
        )

    def pick(n_options: int, k: int) -> torch.Tensor:  # k distinct indices per row, stable argsort of f64 uniforms
        return torch.rand(n, n_options, generator=g, dtype=torch.float64).argsort(dim=1, stable=True)[:, :k]

    keys = pick(V // 2 - 1, D) + 1  # [n, D]
    values = pick(V - V // 2, D) + V // 2  # [n, D]
    order = pick(D, D)  # [n, D] query order
    pos = 2 * D + 2 * pick(n_slots, D)  # [n, D] query offsets
    seq = torch.zeros(n, T + 1, dtype=torch.int64)  # [n, T+1]
    seq[:, 0 : 2 * D : 2], seq[:, 1 : 2 * D : 2] = keys, values
    q_keys, q_values = keys.gather(1, order), values.gather(1, order)  # [n, D]
    seq.scatter_(1, pos, q_keys)
    seq.scatter_(1, pos + 1, q_values)
    y = torch.full((n, T), IGNORE_INDEX, dtype=torch.int64).scatter_(1, pos, q_values)  # [n, T]
    return seq[:, :T].contiguous(), y


class MQARData(Track):
    """MQAR: a train pool of ``mqar_train_examples`` from the run seed, a val set from a fixed seed. No download."""

    kind = "mqar"
    data_sha256 = ""

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.vocab_size = spec.mqar_vocab
        self.val_x, self.val_y = mqar_examples(spec, spec.mqar_val_examples, _generator("mqar-val"))  # [N_val, T]
        self._pool: tuple[int, Batch] | None = None  # (seed, train examples) of the last seed asked for
        self._perms: dict[tuple[int, int], torch.Tensor] = {}  # (seed, epoch) -> order [n] (last seed only)

    def train_pool(self, seed: int) -> Batch:
        """The ``mqar_train_examples`` train examples of a run seed (cached for the last seed asked for)."""
        if self._pool is None or self._pool[0] != seed:
            self._pool = (seed, mqar_examples(self.spec, self.spec.mqar_train_examples, _generator("mqar-train", seed)))
            self._perms = {}
        return self._pool[1]

    def _epoch_order(self, seed: int, epoch: int, n: int) -> torch.Tensor:
        if (seed, epoch) not in self._perms:
            self._perms[(seed, epoch)] = torch.randperm(n, generator=_generator("mqar-epoch", seed, epoch))  # [n]
        return self._perms[(seed, epoch)]

    def train_batch(self, seed: int, step: int) -> Batch:
        """Epochs over the pool, each in its own seeded order; step s takes positions [s*B, (s+1)*B) of that stream."""
        x, y = self.train_pool(seed)
        n, B = x.shape[0], self.spec.batch_size
        flat = torch.arange(step * B, (step + 1) * B)  # [B] positions in the endless epoch stream
        epochs = flat // n
        idx = torch.empty(B, dtype=torch.int64)
        for e in epochs.unique().tolist():
            mask = epochs == e
            idx[mask] = self._epoch_order(seed, e, n)[flat[mask] % n]
        return x[idx], y[idx]  # [B, T], [B, T]

    def val_batches(self, final: bool) -> list[Batch]:
        n = self.spec.final_eval_batches if final else self.spec.eval_batches
        return _batched(self.val_x, self.val_y, self.spec.batch_size, n)


def mqar_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of scored positions (targets != IGNORE_INDEX) where argmax(logits[B, T, V]) equals targets[B, T]."""
    mask = targets != IGNORE_INDEX  # [B, T]
    n = int(mask.sum())
    if n == 0:
        raise ValueError("mqar_accuracy: no scored positions in targets")
    return int((logits.argmax(dim=-1)[mask] == targets[mask]).sum()) / n


# -- entry points ---------------------------------------------------------------------------------------------------
def spec_for_track(base_spec: Spec, track: str, data_flag: str | None = None) -> Spec:
    """``base_spec`` derived for a track: ``track``, ``data_sha256`` and ``dims.vocab_size`` set to match.

    shakespeare: the constant sha and 65 (no file is read); text:PATH: the file's sha256 and character count;
    mqar: ``mqar_vocab`` and "".
    """
    if track == "shakespeare":
        return base_spec.derive(track=track, data_sha256=SHAKESPEARE_SHA256, vocab_size=SHAKESPEARE_VOCAB)
    if track == "mqar":
        return base_spec.derive(track=track, data_sha256="", vocab_size=base_spec.mqar_vocab)
    if track.startswith("text:"):
        path = resolve_corpus(track, data_flag)
        return base_spec.derive(track=track, data_sha256=text_sha256(path), vocab_size=corpus_vocab_size(path))
    base_spec.derive(track=track)  # raises the spec's own "--track must be ..." message
    raise AssertionError("unreachable")


def load_track(spec: Spec, data_flag: str | None = None, *, fetch: Fetch = urllib_fetch) -> Track:
    """The data of ``spec.track``, checked against the spec (data sha256 and vocabulary size must match)."""
    if spec.track == "mqar":
        track: Track = MQARData(spec)
    else:
        path = resolve_corpus(spec.track, data_flag, fetch=fetch)
        sha = _sha256_file(path)
        if sha != spec.data_sha256:
            raise ArenaError(
                f"{path} has sha256 {sha} but spec {spec.label} records {spec.data_sha256 or '(none)'}; "
                f"derive the spec for this file (spec_for_track) or restore the file the spec was made with"
            )
        track = TokenData(spec, _read_text(path), sha)
    if track.vocab_size != spec.dims.vocab_size:
        raise ArenaError(
            f"track {spec.track} has {track.vocab_size} symbols but spec {spec.label} has vocab_size "
            f"{spec.dims.vocab_size}; derive the spec with spec_for_track"
        )
    return track
