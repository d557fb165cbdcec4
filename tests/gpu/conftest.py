"""Everything under tests/gpu needs CUDA: skip the whole folder on a machine without it.

The tests themselves also skip when their kernel package does not import (fla, mamba_ssm, causal_conv1d).
Triton's autotuners are pinned to one config each (``pin_configs``; ARENA_GPU_TESTS_TUNE=1 tunes as usual).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import pin_configs  # beside this file (tests/gpu is not a package)

if torch.cuda.is_available():
    pin_configs.install()  # before any test imports fla or mamba-ssm


@pytest.fixture(autouse=True)
def _skip_without_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (tests/gpu)")
