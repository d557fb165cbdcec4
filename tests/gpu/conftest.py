"""Everything under tests/gpu needs CUDA: skip the whole folder on a machine without it.

The tests themselves also skip when their kernel package does not import (fla, mamba_ssm, causal_conv1d).
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _skip_without_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (tests/gpu)")
