"""Loading the compiled extension and the optional Triton backend."""

import os
import subprocess
import sys

import pytest

import kpfast

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importing_kpfast_does_not_import_triton():
    """Triton is imported on the first Triton call only, so importing kpfast stays cheap (a fresh
    interpreter, so that nothing imported by the test session interferes)."""
    code = "import kpfast, kpfast.ops, kpfast.nn, sys; assert 'triton' not in sys.modules, 'triton imported'"
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=env, timeout=120)


@pytest.mark.triton
def test_triton_is_imported_on_first_triton_call():
    code = ("import torch, sys, kpfast; from kpfast.ops import soft_argmax; "
            "soft_argmax(torch.rand(1, 1, 4, 4), backend='triton'); assert 'triton' in sys.modules")
    env = {**os.environ, "PYTHONPATH": REPO_ROOT, "TRITON_INTERPRET": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT, env=env, timeout=300)


def test_extension_build_has_cuda_when_ci_expects_it():
    import os

    if os.environ.get("KPFAST_EXPECT_CUDA_BUILD") != "1":
        pytest.skip("set KPFAST_EXPECT_CUDA_BUILD=1 where the CUDA sources must have been compiled (CI does)")
    status = kpfast.extension_status()
    assert status["loaded"], status["reason"]
    assert status["cuda_kernels"], "the extension was built without its CUDA kernels"
