"""Test-wide setup.

Without a GPU the Triton kernels run through Triton's interpreter, which must be switched on
before triton is imported: this file is imported by pytest before any test module, so it sets
TRITON_INTERPRET=1 here. With a GPU the Triton kernels run for real on CUDA tensors.
"""

import os
import sys

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    assert "triton" not in sys.modules, "triton was imported before TRITON_INTERPRET could be set"
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from kpfast import backends  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def kernel_device(backend: str) -> torch.device:
    """The device a kernel backend's tests use: CUDA when there is one (cpu: the CPU)."""
    if backend == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


@pytest.fixture(params=["cpu", "cuda", pytest.param("triton", marks=pytest.mark.triton)])
def kernel_backend(request):
    """(backend name, device) for each kernel backend, skipped with the registry's reason when it cannot run."""
    name = request.param
    device = kernel_device(name)
    if name == "cuda" and not torch.cuda.is_available():
        pytest.skip("cuda: no GPU on this machine")
    reason = backends.unavailable_reason(name, device)
    if reason is not None:
        pytest.skip(reason)
    return name, device
