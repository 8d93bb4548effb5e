"""heatmap_loss forward+backward: kpfast backends against the reference, eager and torch.compile.

The reference renders the (B, K, H, W) target, builds the weight map and runs the elementwise
focal loss forward and backward through autograd. Minimal traffic (the roofline): read pred
once and write its gradient once, 2 * B*K*H*W*itemsize bytes. Peak memory beyond the inputs is
recorded beside the time (CUDA: torch.cuda.max_memory_allocated; CPU: the profiler's running
allocation total).
"""

import pytest
import torch

from conftest import implementations
from kpfast import reference
from kpfast.ops import heatmap_loss

K = 17
CASES = [(32, (64, 48)), (256, (64, 48)), (32, (96, 72)), (256, (96, 72))]
# The focal preset: alpha 0.25, gamma 2, beta (unused), keypoint weight 15, background 1,
# threshold 0.1, L1 weight 0.1.
FOCAL = ("focal", 0.25, 2.0, 4.0, 15.0, 1.0, 0.1, 0.1)
_compiled = {}


def _inputs(batch, size, dtype, device):
    generator = torch.Generator().manual_seed(0)
    height, width = size
    keypoints = (torch.rand(batch, 1, K, 2, generator=generator) * torch.tensor([width, height])).to(device)
    weights = (torch.rand(batch, 1, K, generator=generator) > 0.2).float().to(device)
    sigma = torch.full((batch, K), 2.0, device=device)
    pred = (torch.randn(batch, K, height, width, generator=generator) * 2).to(device=device, dtype=dtype)
    return pred.requires_grad_(True), keypoints, weights, sigma


def _reference_loss(pred, keypoints, weights, sigma):
    return reference.heatmap_loss(pred, keypoints, weights, sigma, "udp", *FOCAL, "mean")


def _peak_extra_bytes(fn, device) -> int:
    """Peak bytes allocated by fn beyond what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - baseline
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # [memory] instants and ops' self allocations, in time order: the running total's maximum.
    changes = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events() if e.self_cpu_memory_usage)
    running = peak = 0
    for _, change in changes:
        running += change
        peak = max(peak, running)
    return peak


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("batch, size", CASES, ids=[f"B{b}-{h}x{w}" for b, (h, w) in CASES])
@pytest.mark.parametrize("impl", ["cpu", "cuda", "triton", "torch-eager", "torch-compile"])
def test_loss_forward_backward(measure, device, impl, batch, size, dtype):
    if impl not in implementations(device):
        pytest.skip(f"{impl} does not run on {device.type}")
    if device.type == "cpu" and dtype == torch.bfloat16 and impl == "torch-compile":
        pytest.skip("bf16 on CPU: covered by the float32 comparison")
    pred, keypoints, weights, sigma = _inputs(batch, size, dtype, device)
    height, width = size
    if impl == "torch-eager":
        loss_fn = _reference_loss
    elif impl == "torch-compile":
        loss_fn = _compiled.setdefault("loss", torch.compile(_reference_loss, dynamic=False))
    else:
        def loss_fn(pred, keypoints, weights, sigma):
            return heatmap_loss(pred, keypoints, weights, sigma=sigma, encoding="udp", kind="focal", backend=impl)

    def step():
        pred.grad = None
        loss_fn(pred, keypoints, weights, sigma).backward()

    step()  # warm-up (compilation) before the memory probe
    pred.grad = None  # so that the probe does not see the warm-up's gradient being freed
    peak = _peak_extra_bytes(step, device)
    pred.grad = None
    numel = batch * K * height * width
    bytes_moved = 2 * numel * pred.element_size()
    case = f"B={batch} K={K} {height}x{width} {str(dtype).replace('torch.', '')} focal fwd+bwd"
    rounds = 3 if device.type == "cpu" and batch == 256 else (5 if device.type == "cpu" else 20)
    extra = {"peak_extra_MB": peak / 2**20, "grad_MB": numel * pred.element_size() / 2**20}
    measure(step, op="heatmap_loss", case=case, impl=impl, bytes_moved=bytes_moved, rounds=rounds, extra=extra)
