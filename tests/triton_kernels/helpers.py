"""Shared by the Triton kernel tests."""

import pytest
import torch

from kpfast import backends


def interpreter_device() -> torch.device:
    """The device the Triton kernels run on here: the GPU, or the CPU under the interpreter
    (skipping the test when neither can run them)."""
    reason = backends._device_reason("triton", torch.device("cpu"))
    if reason is not None and not torch.cuda.is_available():
        pytest.skip(reason)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
