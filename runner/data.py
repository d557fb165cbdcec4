"""The data a spec names, checked against it: ``load_track`` and ``spec_for_track``. The parts live in ``corpus``
(where the file comes from), ``tracks`` (tokenizer, split, paired batches) and ``mqar``; their names are
re-exported here so callers import one module.

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

from arena.core.errors import ArenaError
from arena.core.spec import SHAKESPEARE_SHA256, Spec
from arena.runner.corpus import (
    SHAKESPEARE_URL,
    SHAKESPEARE_VOCAB,
    Fetch,
    cache_dir,
    read_text,
    resolve_corpus,
    sha256_file,
    text_sha256,
    urllib_fetch,
)
from arena.runner.mqar import MQARData, mqar_accuracy, mqar_examples
from arena.runner.tracks import IGNORE_INDEX, Batch, CharVocab, TokenData, Track, corpus_vocab_size, count_targets

__all__ = [
    "IGNORE_INDEX", "SHAKESPEARE_SHA256", "SHAKESPEARE_URL", "SHAKESPEARE_VOCAB", "Batch", "CharVocab", "Fetch",
    "MQARData", "TokenData", "Track", "cache_dir", "corpus_vocab_size", "count_targets", "load_track", "mqar_accuracy",
    "mqar_examples", "resolve_corpus", "spec_for_track", "text_sha256",
]


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
        sha = sha256_file(path)
        if sha != spec.data_sha256:
            raise ArenaError(
                f"{path} has sha256 {sha} but spec {spec.label} records {spec.data_sha256 or '(none)'}; "
                f"derive the spec for this file (spec_for_track) or restore the file the spec was made with"
            )
        track = TokenData(spec, read_text(path), sha)
    if track.vocab_size != spec.dims.vocab_size:
        raise ArenaError(
            f"track {spec.track} has {track.vocab_size} symbols but spec {spec.label} has vocab_size "
            f"{spec.dims.vocab_size}; derive the spec with spec_for_track"
        )
    return track
