"""Several GPUs on one host (issue #18's code paths), on the CPU with a faked device count: without flags every
visible GPU gets a worker of its own, ``--gpus 0`` restricts the run to one GPU, ``--workers`` deals round-robin."""

from __future__ import annotations

import pytest
import torch

from arena.cli.common import run_options
from arena.core.errors import ArenaError
from arena.orchestration.engines import LocalEngine
from arena.runner import provenance


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_without_flags_each_visible_gpu_gets_a_worker(two_gpus: None) -> None:
    options = run_options(workers=None)
    assert options.gpus == (0, 1) and options.workers == 2
    engine = LocalEngine(options)
    assert [engine.slot_env(i) for i in range(2)] == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]


def test_gpus_0_restricts_the_run_to_one_gpu(two_gpus: None) -> None:
    options = run_options(workers=None, gpus="0")
    assert options.gpus == (0,) and options.workers == 1
    assert LocalEngine(options).slot_env(0) == {"CUDA_VISIBLE_DEVICES": "0"}


def test_more_workers_than_gpus_share_them_round_robin(two_gpus: None) -> None:
    options = run_options(workers=4)
    assert options.gpus == (0, 1) and options.workers == 4
    assert [LocalEngine(options).slot_env(i)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "1", "0", "1"]


def test_a_named_device_or_the_cpu_keeps_one_worker(two_gpus: None) -> None:
    assert run_options(device="cuda:1", workers=None).gpus == ()
    assert run_options(device="cpu", workers=None).workers == 1


def test_one_gpu_needs_no_pinning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    options = run_options(workers=None)
    assert options.gpus == () and options.workers == 1
    assert provenance.visible_gpus() == 1


def test_a_gpu_that_does_not_exist_is_refused(two_gpus: None) -> None:
    with pytest.raises(ArenaError, match="--gpus: GPU 2 does not exist"):
        run_options(workers=None, gpus="0,2")


def test_pack_auto_packs_every_seed_as_far_as_the_free_memory_holds_them(two_gpus: None,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from arena.cli import common

    free = {"mb": 140_000.0}
    monkeypatch.setattr(provenance, "free_gpu_memory_mb", lambda index=0: free["mb"])
    assert run_options(pack="auto", n_seeds=10, gpus="0").execution.pack == 10  # an H200 holds them all
    assert run_options(pack="auto", n_seeds=40, gpus="0").execution.pack == common.MAX_AUTO_PACK
    free["mb"] = 4_000.0  # 0.8 × 4,000 MiB holds two members of ≈ 1.3 GB
    assert run_options(pack="auto", n_seeds=10, gpus="0").execution.pack == 2
    assert run_options(pack="auto", n_seeds=10, gpus="0", workers=2).execution.pack == 1  # two workers share it
    free["mb"] = None  # nvidia-smi could not be asked: no memory cap
    assert run_options(pack="auto", n_seeds=10, gpus="0").execution.pack == 10
    assert run_options(pack="3", n_seeds=10, gpus="0").execution.pack == 3  # a number is the user's
    assert common.auto_pack(5, 100.0) == 1  # never below one seed
