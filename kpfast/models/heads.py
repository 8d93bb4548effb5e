"""Prediction heads on top of the 1/4-resolution backbone feature."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HeatmapHead", "VisibilityHead"]


class HeatmapHead(nn.Module):
    """One heatmap per keypoint: the paper's final 1x1 convolution (MMPose ``final_layer``)."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.final_layer = nn.Conv2d(in_channels, num_keypoints, kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.final_layer(features)


class VisibilityHead(nn.Module):
    """One visibility logit per keypoint: global average pooling + linear layer."""

    def __init__(self, in_channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_keypoints)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(features).flatten(1))
