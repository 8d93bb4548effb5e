"""End-to-end: a Lite-HRNet-18 training step with kpfast's fused ops against the pure-PyTorch
reference ops, and the share of the step spent in heatmap work (render + loss, decode).

The step is: forward, focal heatmap loss from keypoints, backward, AdamW step. With
``ops=torch`` the loss renders its (B, K, H, W) target with the reference renderer and runs the
elementwise loss through autograd, as a pure-PyTorch trainer does; with ``ops=auto`` kpfast's
fused op reads the predictions once and writes the gradient once. On CUDA the step runs under
bf16 autocast at B=64, 256x192 (docs/design.md); on CPU at B=8 so that the run stays short.
"""

import time

import pytest
import torch

from kpfast.models import build_model
from kpfast.ops import decode_heatmaps, heatmap_loss

K = 17


def _setup(device):
    batch = 64 if device.type == "cuda" else 8
    height, width = 256, 192
    model = build_model("litehrnet_18", num_keypoints=K).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, height, width, generator=generator).to(device)
    keypoints = (torch.rand(batch, K, 2, generator=generator) * torch.tensor([width / 4, height / 4])).to(device)
    weights = (torch.rand(batch, K, generator=generator) > 0.2).float().to(device)
    return batch, model, optimizer, images, keypoints, weights


def _timed(fn, device, repeats):
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@pytest.mark.parametrize("ops", ["auto", "torch"])
def test_train_step(measure, device, ops):
    batch, model, optimizer, images, keypoints, weights = _setup(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def loss_of(heatmaps):
        return heatmap_loss(heatmaps, keypoints, weights, sigma=2.0, encoding="udp", kind="focal", backend=ops)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            heatmaps = model(images)["heatmaps"]
        loss = loss_of(heatmaps.float() if device.type == "cpu" else heatmaps)
        loss.backward()
        optimizer.step()

    # The heatmap share: the loss forward+backward alone, on predictions of the step's shape.
    with torch.no_grad(), autocast:
        predictions = model(images)["heatmaps"]
    predictions = predictions.detach().requires_grad_(True)

    def loss_only():
        loss_of(predictions).backward()

    def decode_only():
        decode_heatmaps(predictions.detach(), method="dark", backend=ops)

    repeats = 20 if device.type == "cuda" else 3
    loss_seconds = _timed(loss_only, device, repeats)
    decode_seconds = _timed(decode_only, device, repeats)
    record = measure(step, op="train_step litehrnet_18", case=f"B={batch} 256x192 focal", impl=f"ops={ops}",
                     rounds=repeats, extra={"loss_fwd_bwd_ms": loss_seconds * 1e3, "decode_ms": decode_seconds * 1e3})
    step_seconds = (record["gpu_ms"] or record["wall_ms"]) / 1e3
    record["loss_share_pct"] = 100 * loss_seconds / step_seconds
    record["decode_ms_per_val_batch"] = decode_seconds * 1e3
