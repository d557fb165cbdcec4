"""Tracks: what the training loop sees of the data. The char tokenizer, the 90/10 contiguous split of a corpus, and
seeded paired batches (``TokenData``); the synthetic recall track lives in ``mqar``.

Contracts every caller may rely on:

- ``train_batch(seed, step)`` is a pure function of (data, spec data fields, seed, step): the same batch on any
  machine, for every variant, in any order of calls (random access: each step seeds its own local generator).
  Nothing here touches the global RNG.
- Validation data is fixed and independent of the seed: the non-overlapping windows from the start of the val split.
- Targets equal ``IGNORE_INDEX`` (-100) where no loss is taken, so one ``cross_entropy(..., ignore_index=-100)``
  serves every track.
- Every tensor is int64 on the CPU; the training loop moves it to its device.
"""

from __future__ import annotations

import copy
import hashlib
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from arena.core.errors import ArenaError
from arena.core.spec import Spec
from arena.runner.corpus import read_text

IGNORE_INDEX = -100
Batch = tuple[torch.Tensor, torch.Tensor]  # (x[B, T], y[B, T]) int64


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
    return len(set(read_text(Path(path).expanduser())))


# -- tracks ---------------------------------------------------------------------------------------------------------
def _stream_seed(*parts: object) -> int:
    """A 63-bit generator seed from named parts: platform-independent and decorrelated across (seed, step)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seeded_generator(*parts: object) -> torch.Generator:
    return torch.Generator().manual_seed(_stream_seed(*parts))


def batched(x: torch.Tensor, y: torch.Tensor, batch_size: int, n_batches: int) -> list[Batch]:
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

    def for_seed(self, seed: int) -> Track:
        """The data a run on ``seed`` sees: this track, or its tuning split for the spec's tuning seeds (a search
        then selects on data the leaderboard never reports)."""
        return self.tuning_split() if seed in self.spec.tuning_seeds else self

    @abstractmethod
    def tuning_split(self) -> Track:
        """This track with the tuning split as its validation data (and, for a corpus, not in its training data)."""

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


def _windows(tokens: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The non-overlapping (x, y) windows [W, T] from the start of ``tokens`` [N]."""
    n_windows = (len(tokens) - 1) // T
    return tokens[: n_windows * T].view(n_windows, T), tokens[1 : n_windows * T + 1].view(n_windows, T)


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
        self.val_x, self.val_y = _windows(self.val, T)  # [W, T] each

    def tuning_split(self) -> TokenData:
        """Train on the first ``1 - tune_fraction`` of the training tokens and score on the rest (the tuning split):
        disjoint from the val split and from what the tuning run trains on."""
        view = copy.copy(self)
        cut = int(len(self.train) * (1 - self.spec.tune_fraction))
        view.train, view.val = self.train[:cut], self.train[cut:]  # [N_fit], [N_tune]
        view.val_x, view.val_y = _windows(view.val, self.spec.seq_len)
        return view

    @property
    def n_train_tokens(self) -> int:
        return len(self.train)

    @property
    def n_val_tokens(self) -> int:
        return len(self.val)

    def train_offsets(self, seed: int, step: int) -> torch.Tensor:
        """Window start offsets [B] into the train split, uniform over every full (x, y) window."""
        g = seeded_generator("lm-train", seed, step)
        return torch.randint(0, len(self.train) - self.spec.seq_len, (self.spec.batch_size,), generator=g)  # [B]

    def train_batch(self, seed: int, step: int) -> Batch:
        idx = self.train_offsets(seed, step)[:, None] + torch.arange(self.spec.seq_len + 1)[None, :]  # [B, T+1]
        chunk = self.train[idx]  # [B, T+1]
        return chunk[:, :-1], chunk[:, 1:]  # [B, T], [B, T]

    def val_batches(self, final: bool) -> list[Batch]:
        n = self.spec.final_eval_batches if final else self.spec.eval_batches
        return batched(self.val_x, self.val_y, self.spec.batch_size, n)
