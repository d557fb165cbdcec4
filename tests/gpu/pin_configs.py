"""Pin every Triton autotuner to its cheapest config, so the GPU tests do not autotune.

Why: on a cold machine Triton compiles and times every config of every FLA kernel for every new shape, dtype and
flag set the tests use (40 s to 4 min a test on an H100); the whole folder then outran a 10-minute device call.
The equivalence tests check the kernels' math against references within tolerances that hold for any config, so
one config each is enough: the cheapest by ``arena.model.backend.config_cost`` (block sizes × stages, mamba-ssm's
deterministic-mode rule), the one arena's deterministic mode also uses for kernels Triton cannot cache. The bench
(bench/gpu_bench.py) still runs the tuned configs. ``ARENA_GPU_TESTS_TUNE=1`` restores full autotuning.

It must be installed before the kernel packages are imported: Triton reads the configs when a kernel is
decorated. tests/gpu/conftest.py installs it; a test that starts a child process installs it there too.
"""

from __future__ import annotations

import os
from typing import Any


def active() -> bool:
    return os.environ.get("ARENA_GPU_TESTS_TUNE", "0") != "1"


def install() -> None:
    if not active():
        return
    from triton.runtime import autotuner

    from arena.model.backend import config_cost

    if getattr(autotuner.Autotuner, "_arena_pinned", False):
        return
    original = autotuner.Autotuner.__init__

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        if len(self.configs) > 1:
            self.configs = [min(self.configs, key=config_cost)]

    autotuner.Autotuner.__init__ = init  # type: ignore[method-assign]
    autotuner.Autotuner._arena_pinned = True  # type: ignore[attr-defined]
