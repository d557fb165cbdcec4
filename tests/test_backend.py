"""Backend environment: what the kernel packages see when arena imports them (no GPU needed: imports are faked)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from arena.errors import ArenaError
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

    monkeypatch.setattr(backend.importlib, "import_module", fake_import)
    caches = (backend._try_import, backend._kernel, backend._import_mamba_untuned)
    for fn in caches:
        fn.cache_clear()
    yield record
    for fn in caches:
        fn.cache_clear()


def test_deterministic_mode_keeps_mamba_out_of_the_autotune_cache(seen: dict[str, dict[str, str | None]]) -> None:
    backend.fla_chunk_rwkv6()
    backend.mamba_chunk_scan_combined()
    assert seen["fla.ops.rwkv6"]["TRITON_CACHE_AUTOTUNING"] == "1"  # FLA: tuned once per machine, then loaded
    mamba = seen["mamba_ssm.ops.triton.ssd_combined"]
    assert mamba["TRITON_CACHE_AUTOTUNING"] is None and mamba["MAMBA_DETERMINISTIC"] == "1"  # cheapest configs
    assert os.environ["TRITON_CACHE_AUTOTUNING"] == "1"  # restored after the import
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert backend.causal_conv1d_fn().startswith("skipped")  # its backward uses atomic adds


def test_mamba_is_imported_untuned_even_when_fla_comes_first(seen: dict[str, dict[str, str | None]]) -> None:
    backend.fla_chunk_rwkv6()  # the RWKV-6 layer runs first in every hybrid block
    assert seen[backend.MAMBA_SSD]["TRITON_CACHE_AUTOTUNING"] is None
    assert seen["fla.ops.rwkv6"]["TRITON_CACHE_AUTOTUNING"] == "1"


def test_mamba_imported_by_someone_else_first_is_a_warning(
    seen: dict[str, dict[str, str | None]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, backend.MAMBA_SSD, type(sys)("fake"))
    with pytest.warns(UserWarning, match="mamba-ssm was imported before arena"):
        backend.mamba_chunk_scan_combined()


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
