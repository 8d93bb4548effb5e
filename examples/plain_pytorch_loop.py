"""kpfast's ops in a plain PyTorch training loop: keypoints in, no target heatmaps anywhere.

The data pipeline yields images and keypoints (in heatmap pixels, x first, with visibility
weights); ``kpfast.nn.HeatmapLoss`` renders the Gaussian target inside its kernel, and
``kpfast.ops.decode_heatmaps`` turns the predicted heatmaps back into coordinates. Any network
with (B, K, H, W) heatmap outputs works; this one is deliberately tiny so the loop runs in seconds
on a CPU (docs/integration.md explains each step)::

    python examples/plain_pytorch_loop.py --steps 150
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from kpfast.nn import HeatmapLoss
from kpfast.ops import decode_heatmaps

HEATMAP = (16, 12)  # (H, W) of the heatmaps; the images are 4x larger, as in a top-down model


class TinyPoseNet(nn.Module):
    """Image (B, 3, 64, 48) -> logits (B, K, 16, 12): any heatmap network plugs in here."""

    def __init__(self, num_keypoints: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, num_keypoints, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)


def synthetic_batch(batch: int, num_keypoints: int, generator: torch.Generator):
    """Images with a bright blob at each keypoint, the keypoints in heatmap pixels and their weights:
    what a top-down data pipeline hands over (no heatmaps)."""
    height, width = HEATMAP
    keypoints = torch.rand(batch, num_keypoints, 2, generator=generator) * torch.tensor([width - 3.0, height - 3.0]) + 1.5
    weights = (torch.rand(batch, num_keypoints, generator=generator) > 0.1).float()  # ~10% not labelled
    rows = torch.arange(4 * height, dtype=torch.float32)[:, None]
    cols = torch.arange(4 * width, dtype=torch.float32)[None, :]
    images = torch.zeros(batch, 3, 4 * height, 4 * width)
    for k in range(num_keypoints):  # keypoint k draws into channel k % 3, at 4x the heatmap scale
        x, y = 4 * keypoints[:, k, 0] + 1.5, 4 * keypoints[:, k, 1] + 1.5
        blob = torch.exp(-((cols - x[:, None, None]) ** 2 + (rows - y[:, None, None]) ** 2) / 8.0)
        images[:, k % 3] += blob * (1 + k // 3)
    return images, keypoints, weights


def train(steps: int = 150, batch: int = 16, num_keypoints: int = 3, seed: int = 0, log_every: int = 0) -> dict:
    """Train TinyPoseNet on fixed synthetic data; returns the first and last loss and the mean
    decoding error (heatmap pixels, visible keypoints) before and after."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    images, keypoints, weights = synthetic_batch(batch, num_keypoints, generator)
    model = TinyPoseNet(num_keypoints)
    criterion = HeatmapLoss.from_preset("focal", sigma=1.5)  # logits in; the target is rendered in the kernel
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def decoding_error() -> float:
        model.eval()
        with torch.no_grad():
            coords, _ = decode_heatmaps(torch.sigmoid(model(images)), method="dark", blur_kernel=3)
        model.train()
        distance = (coords - keypoints).norm(dim=-1)
        return float((distance * weights).sum() / weights.sum())

    before = decoding_error()
    losses = []
    for step in range(steps):
        loss = criterion(model(images), keypoints, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if log_every and step % log_every == 0:
            print(f"step {step:4d} loss {losses[-1]:.5f}")
    return dict(first_loss=losses[0], last_loss=losses[-1], error_before=before, error_after=decoding_error())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    args = parser.parse_args(argv)
    result = train(args.steps, log_every=25)
    print(f"loss {result['first_loss']:.4f} -> {result['last_loss']:.4f}; mean keypoint error "
          f"{result['error_before']:.2f} -> {result['error_after']:.2f} heatmap pixels")


if __name__ == "__main__":
    main()
