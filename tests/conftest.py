"""Test-wide setup.

Without a GPU the Triton kernels run through Triton's interpreter, which must be switched on
before triton is imported: this file is imported by pytest before any test module, so it sets
TRITON_INTERPRET=1 here. With a GPU the Triton kernels run for real on CUDA tensors.
"""

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    assert "triton" not in sys.modules, "triton was imported before TRITON_INTERPRET could be set"
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

from kpfast import backends  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Developer tools (tools/: the Triton AOT gate) are not part of the installed package; the tests that
# exercise them import them from the checkout.
sys.path.insert(0, os.path.join(REPO_ROOT, "tools"))


def coco_sample_root() -> Path | None:
    """``$KPFAST_COCO_SAMPLE`` or ``<repo>/../shared/data/coco_sample`` (or beside the main
    checkout, for worktrees one level deeper), when present."""
    env = os.environ.get("KPFAST_COCO_SAMPLE")
    repo = Path(REPO_ROOT)
    for candidate in ([Path(env)] if env else []) + [repo.parent / "shared" / "data" / "coco_sample",
                                                     repo.parents[1] / "shared" / "data" / "coco_sample"]:
        if (candidate / "annotations" / "person_keypoints_val2017.json").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    """The real COCO val2017 sample (4 photos); the test is skipped when it is absent."""
    root = coco_sample_root()
    if root is None:
        pytest.skip("coco_sample not found (set KPFAST_COCO_SAMPLE or put it at ../shared/data/coco_sample)")
    return root


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


def _interpreter_breakage() -> str | None:
    """Triton < 3.7's interpreter fails with numpy >= 2.4 (``int()`` of a 1-element array; fixed
    upstream in 3.7): under the interpreter those versions skip the Triton tests with this reason."""
    if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET", "0") in ("", "0"):
        return None
    try:
        import numpy
        import triton
    except ImportError:
        return None

    def version(text):
        return tuple(int(part) for part in text.split("+")[0].split(".")[:2] if part.isdigit())

    if version(triton.__version__) < (3, 7) and version(numpy.__version__) >= (2, 4):
        return (f"Triton {triton.__version__}'s interpreter is broken by numpy {numpy.__version__} "
                "(needs numpy < 2.4 or Triton >= 3.7); the Triton kernels are tested on GPUs and by the AOT gate")
    return None


def pytest_collection_modifyitems(config, items):
    reason = _interpreter_breakage()
    if reason is not None:
        for item in items:
            if "triton" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
