"""render_heatmaps: kpfast backends against the reference, eager and torch.compile.

Minimal traffic (the roofline): the maps are written once, B*K*H*W*itemsize bytes.
"""

import pytest
import torch

from conftest import implementations
from kpfast.ops import render_heatmaps
from kpfast.reference import render_heatmaps as reference_render

K = 17
CASES = [(32, (64, 48)), (256, (64, 48)), (32, (96, 72)), (256, (96, 72))]
_compiled = {}


def _inputs(batch, size, device):
    generator = torch.Generator().manual_seed(0)
    height, width = size
    keypoints = (torch.rand(batch, 1, K, 2, generator=generator) * torch.tensor([width, height])).to(device)
    weights = (torch.rand(batch, 1, K, generator=generator) > 0.2).float().to(device)
    sigma = torch.full((batch, K), 2.0, device=device)
    return keypoints, weights, sigma


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("batch, size", CASES, ids=[f"B{b}-{h}x{w}" for b, (h, w) in CASES])
@pytest.mark.parametrize("impl", ["cpu", "cuda", "triton", "torch-eager", "torch-compile"])
def test_render(measure, device, impl, batch, size, dtype):
    if impl not in implementations(device):
        pytest.skip(f"{impl} does not run on {device.type}")
    if device.type == "cpu" and dtype == torch.bfloat16 and impl == "torch-compile":
        pytest.skip("bf16 on CPU: covered by the float32 comparison")
    keypoints, weights, sigma = _inputs(batch, size, device)
    height, width = size
    if impl == "torch-eager":
        fn = lambda: reference_render(keypoints, weights, sigma, height, width, "udp", dtype)  # noqa: E731
    elif impl == "torch-compile":
        compiled = _compiled.setdefault("render", torch.compile(reference_render, dynamic=False))
        fn = lambda: compiled(keypoints, weights, sigma, height, width, "udp", dtype)  # noqa: E731
    else:
        fn = lambda: render_heatmaps(keypoints, weights, size=size, sigma=sigma, encoding="udp",  # noqa: E731
                                     dtype=dtype, backend=impl)
    bytes_moved = batch * K * height * width * torch.empty((), dtype=dtype).element_size()
    case = f"B={batch} K={K} {height}x{width} {str(dtype).replace('torch.', '')} udp"
    rounds = 5 if device.type == "cpu" and batch == 256 else 10
    measure(fn, op="render_heatmaps", case=case, impl=impl, bytes_moved=bytes_moved, rounds=rounds)
