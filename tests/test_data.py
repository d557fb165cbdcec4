"""The data protocol: corpus resolution and checks, the split, seeded paired batches, fixed val, MQAR, text tracks.

No network: every test runs with ARENA_CACHE in a tmp folder and the download URL pointed at a closed local port;
the download tests serve a small fake corpus from a local http.server and patch the expected size and sha256.
"""

from __future__ import annotations

import hashlib
import http.server
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from arena.core.errors import ArenaError
from arena.core.spec import SHAKESPEARE_SHA256, Spec, preset
from arena.runner import corpus, data

# Captured at collection, before the autouse fixture hides it: CI sets ARENA_DATA to the real corpus.
REAL_DATA = os.environ.get("ARENA_DATA")

FAKE = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40  # 2,520 chars


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache under tmp, no ARENA_DATA, and a download URL that refuses connections."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ARENA_CACHE", str(cache))
    monkeypatch.delenv("ARENA_DATA", raising=False)
    monkeypatch.setattr(corpus, "SHAKESPEARE_URL", "http://127.0.0.1:9/input.txt")
    return cache


@pytest.fixture
def fake_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A small corpus file that the resolver accepts as 'the' shakespeare corpus (expected size and sha patched)."""
    path = tmp_path / "fake.txt"
    path.write_text(FAKE, encoding="utf-8")
    monkeypatch.setattr(data, "SHAKESPEARE_SHA256", hashlib.sha256(FAKE.encode()).hexdigest())
    monkeypatch.setattr(corpus, "SHAKESPEARE_SHA256", hashlib.sha256(FAKE.encode()).hexdigest())
    monkeypatch.setattr(corpus, "SHAKESPEARE_BYTES", len(FAKE.encode()))
    monkeypatch.setattr(data, "SHAKESPEARE_VOCAB", len(set(FAKE)))
    return path


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A local http.server on 127.0.0.1 serving tmp_path/www; SHAKESPEARE_URL points at www/input.txt."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(www), **kwargs)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setattr(corpus, "SHAKESPEARE_URL", f"http://127.0.0.1:{server.server_address[1]}/input.txt")
    yield www
    server.shutdown()
    server.server_close()


def small_spec(**changes: object) -> Spec:
    base = preset("smoke").derive(batch_size=4, seq_len=16, eval_batches=2, final_eval_batches=0)
    return base.derive(**changes) if changes else base


def lm_track(text: str = FAKE, **changes: object) -> data.TokenData:
    return data.TokenData(small_spec(**changes), text, "test")


# -- resolution ------------------------------------------------------------------------------------------------------
def test_resolution_order_flag_env_cache(fake_corpus: Path, isolated: Path, tmp_path: Path, monkeypatch) -> None:
    isolated.mkdir()
    cached = isolated / "tinyshakespeare.txt"
    cached.write_text(FAKE)
    assert data.resolve_corpus("shakespeare", None) == cached
    env_dir = tmp_path / "envdir"
    env_dir.mkdir()
    (env_dir / "tinyshakespeare.txt").write_text(FAKE)
    monkeypatch.setenv("ARENA_DATA", str(env_dir))  # a folder
    assert data.resolve_corpus("shakespeare", None) == env_dir / "tinyshakespeare.txt"
    assert data.resolve_corpus("shakespeare", str(fake_corpus)) == fake_corpus  # flag beats env
    monkeypatch.setenv("ARENA_DATA", str(fake_corpus))  # a file
    assert data.resolve_corpus("shakespeare", None) == fake_corpus


def test_flag_folder_without_corpus_and_missing_path(fake_corpus: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArenaError, match=r"--data: folder .*empty holds no tinyshakespeare.txt"):
        data.resolve_corpus("shakespeare", str(empty))
    with pytest.raises(ArenaError, match=r"--data: .*nope.txt does not exist"):
        data.resolve_corpus("shakespeare", str(tmp_path / "nope.txt"))
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "tinyshakespeare.txt").write_text(FAKE)
    assert data.resolve_corpus("shakespeare", str(folder)) == folder / "tinyshakespeare.txt"


def test_wrong_and_partial_file_refused_with_clear_message(fake_corpus: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial.txt"
    partial.write_text(FAKE[:100])
    with pytest.raises(ArenaError) as err:
        data.resolve_corpus("shakespeare", str(partial))
    msg = str(err.value)
    assert "\n" not in msg and str(partial) in msg and "partial" in msg
    assert data.SHAKESPEARE_SHA256 in msg and hashlib.sha256(FAKE[:100].encode()).hexdigest() in msg
    assert f"expected {len(FAKE)} bytes" in msg and "found 100 bytes" in msg and "fix:" in msg
    same_size = tmp_path / "same.txt"
    same_size.write_text(FAKE.replace("F", "G"))
    with pytest.raises(ArenaError, match="different file of the same size"):
        data.resolve_corpus("shakespeare", str(same_size))


def test_real_sha_refuses_fake_file(tmp_path: Path) -> None:
    path = tmp_path / "input.txt"
    path.write_text(FAKE)
    with pytest.raises(ArenaError, match=SHAKESPEARE_SHA256):
        data.resolve_corpus("shakespeare", str(path))


def test_offline_without_copy_says_how_to_supply_one(isolated: Path) -> None:
    with pytest.raises(ArenaError) as err:
        data.resolve_corpus("shakespeare", None)
    msg = str(err.value)
    assert "\n" not in msg and "--data PATH" in msg and "ARENA_DATA=" in msg
    assert str(isolated / "tinyshakespeare.txt") in msg
    assert not (isolated / "tinyshakespeare.txt").exists()


def test_download_success_caches_once(fake_corpus: Path, served: Path, isolated: Path) -> None:
    (served / "input.txt").write_text(FAKE)
    path = data.resolve_corpus("shakespeare", None)
    assert path == isolated / "tinyshakespeare.txt" and path.read_text() == FAKE
    assert [p.name for p in isolated.iterdir()] == ["tinyshakespeare.txt"]  # no temp file left behind
    (served / "input.txt").unlink()  # a second resolve must not download again
    assert data.resolve_corpus("shakespeare", None) == path


def test_download_checksum_mismatch_caches_nothing(fake_corpus: Path, served: Path, isolated: Path) -> None:
    (served / "input.txt").write_text(FAKE[:-1] + "?")
    with pytest.raises(ArenaError, match=r"downloaded from http://127\.0\.0\.1.*nothing was cached"):
        data.resolve_corpus("shakespeare", None)
    assert list(isolated.iterdir()) == []


def test_download_is_injectable(fake_corpus: Path, isolated: Path) -> None:
    calls: list[tuple[str, float]] = []

    def fetch(url: str, dest: Path, timeout: float) -> None:
        calls.append((url, timeout))
        dest.write_text(FAKE)

    assert data.resolve_corpus("shakespeare", None, fetch=fetch).read_text() == FAKE
    assert calls == [(corpus.SHAKESPEARE_URL, 30.0)]


def test_cache_dir_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert data.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("ARENA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_dir() == tmp_path / "xdg" / "arena"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == Path.home() / ".cache" / "arena"


# -- tokenizer and split ---------------------------------------------------------------------------------------------
def test_char_vocab_roundtrip_and_sorted() -> None:
    vocab = data.CharVocab.from_text("hello, wörld\n")
    assert vocab.chars == "".join(sorted(set("hello, wörld\n"))) and len(vocab) == 11
    ids = vocab.encode("world, hello")
    assert ids.dtype == torch.int64 and vocab.decode(ids) == "world, hello"
    assert vocab.encode("\n").item() == 0
    with pytest.raises(ArenaError, match="'z'"):
        vocab.encode("z")


def test_split_is_contiguous_90_10_without_overlap() -> None:
    text = "".join(chr(33 + i % 90) for i in range(1000))
    tr = lm_track(text)
    assert tr.n_train_tokens == 900 and tr.n_val_tokens == 100
    assert torch.equal(torch.cat([tr.train, tr.val]), tr.vocab.encode(text))
    for step in range(50):  # every train window lies inside the train split
        assert int(tr.train_offsets(0, step).max()) + tr.spec.seq_len + 1 <= tr.n_train_tokens


def test_tuning_seeds_train_without_and_score_on_the_tuning_split() -> None:
    """A search never selects on the val split the leaderboard reports: runs on tuning seeds hold out the last
    tune_fraction of the training tokens, train on the rest and score there."""
    text = "".join(chr(33 + i % 90) for i in range(2000))
    tr = lm_track(text)
    seed = tr.spec.tuning_seeds[0]
    assert tr.for_seed(0) is tr and tr.for_seed(tr.spec.seeds[-1]) is tr
    tune = tr.for_seed(seed)
    cut = int(1800 * (1 - tr.spec.tune_fraction))  # 1800 training tokens, the last 5% held out
    assert torch.equal(tune.train, tr.train[:cut]) and torch.equal(tune.val, tr.train[cut:])
    assert torch.equal(torch.cat([tune.train, tune.val]), tr.train)  # the val split is not touched
    xs = torch.cat([x for x, _ in tune.val_batches(final=True)]).reshape(-1)
    assert torch.equal(xs, tr.train[cut: cut + len(xs)])  # scored on the held-out tail only
    for step in range(50):  # and never trained on
        assert int(tune.train_offsets(seed, step).max()) + tr.spec.seq_len + 1 <= cut
    assert tr.val_batches(final=True)[0][0].shape == tr.val_batches(final=True)[0][0].shape  # original unchanged


def test_val_windows_fixed_non_overlapping_and_seed_independent() -> None:
    tr = lm_track()
    T, B = tr.spec.seq_len, tr.spec.batch_size
    n_windows = (tr.n_val_tokens - 1) // T
    final = tr.val_batches(final=True)
    assert sum(x.shape[0] for x, _ in final) == n_windows and all(x.shape[0] == B for x, _ in final[:-1])
    xs = torch.cat([x for x, _ in final])  # [W, T]
    assert torch.equal(xs.reshape(-1), tr.val[: n_windows * T])  # windows tile the val split from its start
    assert torch.equal(torch.cat([y for _, y in final]).reshape(-1), tr.val[1 : n_windows * T + 1])
    inter = tr.val_batches(final=False)
    assert len(inter) == tr.spec.eval_batches and torch.equal(inter[0][0], final[0][0])
    assert tr.val_target_count(True) == n_windows * T
    assert len(lm_track(final_eval_batches=1).val_batches(final=True)) == 1
    tr.train_batch(7, 3)  # drawing train batches changes nothing about val
    assert all(torch.equal(a[0], b[0]) for a, b in zip(final, tr.val_batches(True), strict=True))


# -- seeded, paired batches ------------------------------------------------------------------------------------------
def test_train_batches_deterministic_and_seed_dependent() -> None:
    a, b = lm_track(), lm_track()
    x, y = a.train_batch(3, 5)
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one
    torch.manual_seed(123)  # the global RNG plays no part
    assert all(torch.equal(u, v) for u, v in zip(a.train_batch(3, 5), b.train_batch(3, 5), strict=True))
    assert not torch.equal(a.train_batch(3, 5)[0], a.train_batch(4, 5)[0])
    assert not torch.equal(a.train_batch(3, 5)[0], a.train_batch(3, 6)[0])
    stream = a.iter_train(3, start=4)
    next(stream)
    assert torch.equal(next(stream)[0], x)  # iteration and random access agree


def test_batches_are_pinned_protocol() -> None:
    """Golden offsets: if these change, every stored result is incomparable (bump PROTOCOL_VERSION)."""
    tr = data.TokenData(preset("smoke"), "".join(chr(97 + (i * 7) % 26) for i in range(5000)), "x")
    assert tr.train_offsets(0, 0).tolist() == [2439, 3381, 1991, 2299, 3902, 4196, 3366, 3725]
    assert tr.train_offsets(1, 3).tolist() == [344, 2290, 880, 3006, 2602, 2388, 3293, 3628]


def test_paired_across_variant_settings() -> None:
    """Nothing variant-related (model dims, lr, optimizer, hparams) changes the data a seed sees."""
    base = lm_track()
    other = lm_track(d_model=64, n_layer=3, lr=1e-2, weight_decay=0.0, precision="bf16", rwkv_init="x060")
    for step in (0, 1, 17):
        assert torch.equal(base.train_batch(2, step)[0], other.train_batch(2, step)[0])
    assert torch.equal(base.val_batches(True)[0][1], other.val_batches(True)[0][1])


def test_bits_per_char() -> None:
    assert lm_track().bits_per_char(math.log(2)) == pytest.approx(1.0)


# -- MQAR ------------------------------------------------------------------------------------------------------------
def mqar_spec(**changes: object) -> Spec:
    sizes: dict[str, object] = {"mqar_train_examples": 256, "mqar_val_examples": 40, **changes}
    return data.spec_for_track(small_spec(seq_len=48, mqar_vocab=64, mqar_kv_pairs=6, **sizes), "mqar")


def oracle(x: torch.Tensor, n_pairs: int) -> torch.Tensor:
    """Lookup oracle: logits[B, T, V] that put all mass on the value stored for the key at each position."""
    V = 64
    logits = torch.zeros(*x.shape, V)  # [B, T, V]
    for b in range(x.shape[0]):
        table = {int(x[b, 2 * i]): int(x[b, 2 * i + 1]) for i in range(n_pairs)}
        for t in range(x.shape[1]):
            logits[b, t, table.get(int(x[b, t]), 0)] = 1.0
    return logits


def test_mqar_structure_and_oracle_solves_it() -> None:
    spec = mqar_spec()
    track = data.load_track(spec)
    D, V = spec.mqar_kv_pairs, spec.mqar_vocab
    assert track.kind == "mqar" and track.vocab_size == V and track.data_sha256 == ""
    x, y = track.train_batch(0, 0)
    assert x.shape == y.shape == (spec.batch_size, spec.seq_len)
    keys, values = x[:, 0 : 2 * D : 2], x[:, 1 : 2 * D : 2]  # [B, D]
    assert bool(((keys >= 1) & (keys < V // 2)).all()) and bool(((values >= V // 2) & (values < V)).all())
    assert all(len(set(row.tolist())) == D for row in keys)
    scored = y != data.IGNORE_INDEX  # [B, T]
    assert int(scored[:, : 2 * D].sum()) == 0 and bool((scored.sum(dim=1) == D).all())  # each key queried once
    assert bool(((x[scored] >= 1) & (x[scored] < V // 2)).all())  # queries are keys
    q = x.masked_fill(~scored, -1)  # [B, T]: the queried keys, in order
    assert all(sorted(q[b][q[b] >= 0].tolist()) == sorted(keys[b].tolist()) for b in range(x.shape[0]))
    filler = ~scored.clone()
    filler[:, : 2 * D] = False
    filler[:, 1:] &= ~scored[:, :-1]  # the value right after a query is shown too
    assert bool((x[filler] == 0).all())
    assert data.mqar_accuracy(oracle(x, D), y) == 1.0
    for vx, vy in track.val_batches(final=True):
        assert data.mqar_accuracy(oracle(vx, D), vy) == 1.0
    assert data.mqar_accuracy(torch.zeros(*x.shape, V), y) == 0.0  # argmax 0 is never a value


def test_mqar_train_paired_val_fixed() -> None:
    a, b = data.load_track(mqar_spec()), data.load_track(mqar_spec(d_model=64, lr=1e-3))
    assert torch.equal(a.train_batch(1, 9)[0], b.train_batch(1, 9)[0])
    assert not torch.equal(a.train_batch(1, 9)[0], a.train_batch(2, 9)[0])
    a.train_batch(5, 0)
    assert torch.equal(a.val_batches(True)[0][0], b.val_batches(True)[0][0])
    val = a.val_batches(True)
    assert sum(x.shape[0] for x, _ in val) == a.spec.mqar_val_examples
    assert a.val_target_count(True) == a.spec.mqar_val_examples * a.spec.mqar_kv_pairs
    assert a.bits_per_char(1.0) is None


def test_mqar_epochs_cover_the_pool() -> None:
    spec = mqar_spec(mqar_train_examples=12)  # batch 4: one epoch = 3 steps
    track = data.load_track(spec)
    assert isinstance(track, data.MQARData)
    pool_x, _ = track.train_pool(0)
    epoch = torch.cat([track.train_batch(0, s)[0] for s in range(3)])  # [12, T]
    assert sorted(map(tuple, epoch.tolist())) == sorted(map(tuple, pool_x.tolist()))
    assert torch.equal(track.train_batch(0, 4)[0], data.load_track(spec).train_batch(0, 4)[0])


def test_mqar_too_short_sequence_is_an_error() -> None:
    with pytest.raises(ArenaError, match="seq_len >= 4\\*mqar_kv_pairs - 1"):
        data.load_track(data.spec_for_track(small_spec(seq_len=16, mqar_kv_pairs=8), "mqar"))


# -- text:PATH and the entry points ----------------------------------------------------------------------------------
def test_text_track(tmp_path: Path) -> None:
    path = tmp_path / "poem.txt"
    text = "ünïcode and plain text, " * 60
    path.write_text(text, encoding="utf-8")
    spec = data.spec_for_track(small_spec(), f"text:{path}")
    assert spec.data_sha256 == data.text_sha256(path) == hashlib.sha256(text.encode()).hexdigest()
    assert spec.dims.vocab_size == data.corpus_vocab_size(path) == len(set(text))
    track = data.load_track(spec)
    assert track.kind == "lm" and track.vocab_size == len(set(text))
    path.write_text(text + "!", encoding="utf-8")  # the file changed since the spec was derived
    with pytest.raises(ArenaError, match="derive the spec"):
        data.load_track(spec)
    with pytest.raises(ArenaError, match="--data applies to the shakespeare track only"):
        data.spec_for_track(small_spec(), f"text:{path}", "elsewhere.txt")


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "is empty"), (b"abc\xff\xfe", "not UTF-8 \\(bad byte at offset 3\\)"), (None, "cannot read corpus")],
)
def test_text_track_bad_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    path = tmp_path / "bad.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ArenaError, match=match):
        data.text_sha256(path)
    with pytest.raises(ArenaError, match=str(path)):
        data.spec_for_track(small_spec(), f"text:{path}")


def test_spec_for_track_and_load_checks(fake_corpus: Path) -> None:
    spec = data.spec_for_track(small_spec(), "shakespeare")
    assert spec.track == "shakespeare" and spec.dims.vocab_size == data.SHAKESPEARE_VOCAB
    track = data.load_track(spec, str(fake_corpus))
    assert track.data_sha256 == data.SHAKESPEARE_SHA256 and track.vocab_size == len(set(FAKE))
    with pytest.raises(ArenaError, match="vocab_size"):
        data.load_track(spec.derive(vocab_size=99), str(fake_corpus))
    with pytest.raises(ArenaError, match="--track must be"):
        data.spec_for_track(small_spec(), "shakespear")


@pytest.mark.skipif(not (REAL_DATA and Path(REAL_DATA).is_file()), reason="ARENA_DATA does not point at the corpus")
def test_real_corpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert REAL_DATA is not None
    monkeypatch.setenv("ARENA_DATA", REAL_DATA)
    path = data.resolve_corpus("shakespeare", None)
    assert data.text_sha256(path) == SHAKESPEARE_SHA256 and data.corpus_vocab_size(path) == 65
    track = data.load_track(preset("phase2"))
    assert isinstance(track, data.TokenData) and track.vocab_size == 65
    assert (track.n_train_tokens, track.n_val_tokens) == (1_003_854, 111_540)
    assert len(track.val_batches(final=True)) == math.ceil(((111_540 - 1) // 64) / 64)
    assert track.vocab.decode(track.train[:14]) == "First Citizen:"
