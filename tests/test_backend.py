"""Backend environment: what the kernel packages see when arena imports them (no GPU needed: imports are faked)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from arena.core.errors import ArenaError
from arena.model import backend

ENV = ("TRITON_CACHE_AUTOTUNING", "MAMBA_DETERMINISTIC", "CUBLAS_WORKSPACE_CONFIG", "ARENA_DETERMINISTIC")


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, str | None]]]:
    """Fake imports that record the environment each kernel module was imported under."""
    for var in ENV:  # set, then delete: monkeypatch then restores whatever kernel_env() writes
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    record: dict[str, dict[str, str | None]] = {}

    def fake_import(name: str) -> Any:
        record.setdefault(name, {var: os.environ.get(var) for var in ENV})
        if name.startswith("fla"):  # as the real one: fla/__init__ imports fla.layers.mamba2, which imports mamba-ssm
            fake_import(backend.MAMBA_SSD)
        return type("Module", (), {"mamba_chunk_scan_combined": "k", "chunk_rwkv6": "k", "causal_conv1d_fn": "k"})

    # The pinning step imports Triton's autotuner for real: do it before importlib is faked (Triton uses it).
    with contextlib.suppress(ImportError):
        import triton.runtime.autotuner  # noqa: F401
    monkeypatch.setattr(backend.importlib, "import_module", fake_import)
    caches = (backend._try_import, backend._kernel)
    for fn in caches:
        fn.cache_clear()
    yield record
    for fn in caches:
        fn.cache_clear()


def test_deterministic_mode_environment(seen: dict[str, dict[str, str | None]]) -> None:
    backend.fla_chunk_rwkv6()
    backend.mamba_chunk_scan_combined()
    assert seen["fla.ops.rwkv6"]["TRITON_CACHE_AUTOTUNING"] == "1"  # FLA: tuned once per machine, then loaded
    mamba = seen["mamba_ssm.ops.triton.ssd_combined"]  # imported by fla first, as the real fla does
    assert mamba["TRITON_CACHE_AUTOTUNING"] == "1" and mamba["MAMBA_DETERMINISTIC"] == "1"
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert backend.causal_conv1d_fn().startswith("skipped")  # its backward uses atomic adds


def test_uncacheable_autotuners_are_pinned_and_the_rest_keep_tuning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels whose configs carry pre-hooks (Triton re-times them in every process) get one config; others keep all."""
    triton = pytest.importorskip("triton")
    import triton.language as tl

    def zero(nargs: dict[str, Any]) -> None:  # a pre-hook, as mamba-ssm's init_to_zero
        pass

    def configs(hook: Any) -> list[Any]:
        return [triton.Config({"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64}, num_stages=3, pre_hook=hook),
                triton.Config({"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 64}, num_stages=2, pre_hook=hook),
                triton.Config({"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32}, num_stages=3, pre_hook=hook)]

    def body(x, n, BLOCK_SIZE_M: tl.constexpr, BLOCK_SIZE_N: tl.constexpr):  # type: ignore[no-untyped-def]
        pass

    fake = type(sys)("mamba_ssm.ops.triton.fake")
    fake.hooked = triton.autotune(configs=configs(zero), key=["n"])(triton.jit(body))  # type: ignore[attr-defined]
    fake.plain = triton.autotune(configs=configs(None), key=["n"])(triton.jit(body))  # type: ignore[attr-defined]
    fake.wrapped = triton.heuristics({"X": lambda a: 1})(  # type: ignore[attr-defined]
        triton.autotune(configs=configs(zero), key=["n"])(triton.jit(body)))
    monkeypatch.setitem(sys.modules, fake.__name__, fake)
    pinned = backend.pin_uncacheable_autotuners()
    assert sorted(pinned) == ["mamba_ssm.ops.triton.fake.hooked", "mamba_ssm.ops.triton.fake.wrapped"]
    (only,) = fake.hooked.configs  # type: ignore[attr-defined]
    assert only.kwargs == {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32}  # 32·32·3 < 32·64·2 < 64·64·3
    assert len(fake.plain.configs) == 3  # type: ignore[attr-defined]  # cacheable: tuned once, loaded after
    assert backend.pin_uncacheable_autotuners() == []  # idempotent


def test_a_users_own_setting_survives(seen: dict[str, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRITON_CACHE_AUTOTUNING", "0")
    backend.mamba_chunk_scan_combined()
    assert os.environ["TRITON_CACHE_AUTOTUNING"] == "0"


def test_non_deterministic_mode_tunes_everything(
    seen: dict[str, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARENA_DETERMINISTIC", "0")
    backend.mamba_chunk_scan_combined()
    assert backend.causal_conv1d_fn() == "k"
    mamba = seen["mamba_ssm.ops.triton.ssd_combined"]
    assert mamba["TRITON_CACHE_AUTOTUNING"] == "1" and mamba["MAMBA_DETERMINISTIC"] is None
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ


def test_bad_deterministic_value_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARENA_DETERMINISTIC", "maybe")
    with pytest.raises(ArenaError, match="ARENA_DETERMINISTIC='maybe'"):
        backend.deterministic()
