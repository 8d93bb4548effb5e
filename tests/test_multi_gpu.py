"""Two GPUs: every op on tensors of cuda:1 while cuda:0 is the current device runs there (the
kernels' device guard), leaves cuda:0 current, and gives what the same call gives on cuda:0.
Runs where two GPUs exist and skips otherwise."""

import pytest
import torch

from kpfast import backends, info

pytestmark = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")

CASES = sorted(info._cases(info._inputs(torch.device("cpu"))))


@pytest.fixture(params=["cuda", pytest.param("triton", marks=pytest.mark.triton)])
def gpu_backend(request):
    reason = backends._device_reason(request.param, torch.device("cuda", 1))
    if reason is not None:
        pytest.skip(reason)
    return request.param


@pytest.mark.parametrize("case", CASES)
def test_op_on_the_second_gpu_while_the_first_is_current(gpu_backend, case):
    torch.cuda.set_device(0)
    expected = info._cases(info._inputs(torch.device("cuda", 0)))[case](gpu_backend)
    got = info._cases(info._inputs(torch.device("cuda", 1)))[case](gpu_backend)
    torch.cuda.synchronize(1)
    assert torch.cuda.current_device() == 0
    assert all(t.device == torch.device("cuda", 1) for t in got), [t.device for t in got]
    assert info._agree(tuple(t.to("cuda:0") for t in got), expected) is None
