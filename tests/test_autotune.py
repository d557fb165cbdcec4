"""arena.model.autotune: the recorded kernel choices and the portable autotune cache (CPU: Triton imports here)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from arena.core.errors import ArenaError
from arena.model import autotune

RECORD = {"key": [64, "torch.float32"], "configs_timings": [[{"kwargs": {"BK": 32}, "num_warps": 4}, [0.01]]]}


def _fake_cache(root: Path, n: int = 3) -> Path:
    for i in range(n):
        d = root / f"HASH{i}"
        d.mkdir(parents=True)
        (d / f"kernel_{i}.autotune.json").write_text(json.dumps(RECORD | {"key": [i]}))
        (d / f"kernel_{i}.cubin").write_bytes(b"\0binary")  # compiled code stays behind: only choices travel
    return root


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_export_then_import_carries_every_choice(tmp_path: Path) -> None:
    src = _fake_cache(tmp_path / "a")
    assert autotune.export_cache(tmp_path / "x.tgz", src) == 3
    with tarfile.open(tmp_path / "x.tgz") as tar:
        assert sorted(tar.getnames()) == [f"HASH{i}/kernel_{i}.autotune.json" for i in range(3)]
    dest = tmp_path / "b"
    assert autotune.import_cache(tmp_path / "x.tgz", dest) == 3
    for i in range(3):
        name = f"HASH{i}/kernel_{i}.autotune.json"
        assert (dest / name).read_bytes() == (src / name).read_bytes()
    assert not list(dest.rglob("*.part"))


def test_import_replaces_this_machines_own_choice(tmp_path: Path) -> None:
    theirs = _tar(tmp_path / "x.tgz", {"H/k.autotune.json": json.dumps(RECORD | {"key": ["theirs"]}).encode()})
    (tmp_path / "c" / "H").mkdir(parents=True)
    (tmp_path / "c" / "H" / "k.autotune.json").write_text(json.dumps(RECORD | {"key": ["mine"]}))
    autotune.import_cache(theirs, tmp_path / "c")
    assert json.loads((tmp_path / "c" / "H" / "k.autotune.json").read_text())["key"] == ["theirs"]


def test_export_refuses_an_empty_cache_and_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(ArenaError, match="no Triton autotune results"):
        autotune.export_cache(tmp_path / "x.tgz", tmp_path / "empty")
    src = _fake_cache(tmp_path / "a", n=1)
    (tmp_path / "x.tgz").write_text("keep me")
    with pytest.raises(ArenaError, match=r"already exists.*--force"):
        autotune.export_cache(tmp_path / "x.tgz", src)
    assert (tmp_path / "x.tgz").read_text() == "keep me"
    assert autotune.export_cache(tmp_path / "x.tgz", src, force=True) == 1
    with pytest.raises(ArenaError, match="does not exist"):
        autotune.export_cache(tmp_path / "no" / "x.tgz", src)


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ({"../evil.autotune.json": json.dumps(RECORD).encode()}, "not a Triton autotune result"),
        ({"H/k.autotune.json": json.dumps(RECORD).encode(), "H/k.cubin": b"x"}, "not a Triton autotune result"),
        ({"H/k.autotune.json": b"{not json"}, "not a readable autotune export"),
        ({"H/k.autotune.json": b'{"key": [1]}'}, "does not hold an autotune record"),
        ({}, "holds no autotune results"),
    ],
    ids=["path-escape", "other-file", "bad-json", "not-a-record", "empty"],
)
def test_import_refuses_bad_files_and_writes_nothing(tmp_path: Path, members: dict[str, bytes], message: str) -> None:
    bad = _tar(tmp_path / "bad.tgz", {"H/good.autotune.json": json.dumps(RECORD).encode()} | members
               if members else {})
    cache = tmp_path / "cache"
    with pytest.raises(ArenaError, match=message):
        autotune.import_cache(bad, cache)
    assert not cache.exists() and not (tmp_path / "evil.autotune.json").exists()


def test_import_of_a_non_archive_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "j.tgz").write_text("junk")
    with pytest.raises(ArenaError) as info:
        autotune.import_cache(tmp_path / "j.tgz", tmp_path / "cache")
    assert "\n" not in str(info.value) and "j.tgz" in str(info.value)


def test_choices_reads_live_autotuners_and_digest_is_order_free() -> None:
    triton = pytest.importorskip("triton")

    @triton.autotune(configs=[triton.Config({"BLOCK": 16}), triton.Config({"BLOCK": 32})], key=["n"])
    @triton.jit
    def _arena_probe_kernel(x, n, BLOCK: triton.language.constexpr):  # type: ignore[no-untyped-def]
        pass

    _arena_probe_kernel.cache[(4,)] = _arena_probe_kernel.configs[1]  # as if it had tuned n=4 to BLOCK 32
    found = autotune.choices()
    mine = {k: v for k, v in found.items() if k.endswith("._arena_probe_kernel")}
    assert len(mine) == 1 and "BLOCK: 32" in next(iter(mine.values()))["(4,)"]
    a = {"k1": {"(1,)": "A"}, "k2": {"(2,)": "B"}}
    b = {"k2": {"(2,)": "B"}, "k1": {"(1,)": "A"}}
    assert autotune.digest(a) == autotune.digest(b) and len(autotune.digest(a) or "") == 16
    assert autotune.digest({"k1": {"(1,)": "C"}}) != autotune.digest(a)
    assert autotune.digest({}) is None
