"""Every GPU op is capturable in a CUDA graph (docs/design.md): no host sync, no data-dependent
allocation, one fixed set of launches. Captured once, replayed on new data written into the
static inputs, and compared with the eager call on that data. Skipped without a GPU."""

import pytest
import torch

from kpfast import backends, info

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")

CASES = sorted(info._cases(info._inputs(torch.device("cpu"))))


@pytest.fixture(params=["cuda", pytest.param("triton", marks=pytest.mark.triton)])
def gpu_backend(request):
    reason = backends._device_reason(request.param, torch.device("cuda"))
    if reason is not None:
        pytest.skip(reason)
    return request.param


@pytest.mark.parametrize("case", CASES)
def test_op_is_capturable_and_replays_on_new_data(gpu_backend, case):
    device = torch.device("cuda")
    static = info._inputs(device)
    run = info._cases(static)[case]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # warm-up outside the graph: JIT compilation, allocator, lazy init
            run(gpu_backend)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = run(gpu_backend)
    fresh = info._inputs(device)
    fresh["maps"] = fresh["maps"].flip(-1) * 1.5
    fresh["keypoints"] = fresh["keypoints"].flip(1)
    for key, value in fresh.items():
        static[key].copy_(value)
    graph.replay()
    torch.cuda.synchronize()
    expected = info._cases(fresh)[case](gpu_backend)
    assert info._agree(captured, expected) is None
