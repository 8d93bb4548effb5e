"""Top-down pose model: Lite-HRNet backbone + heatmap head (+ optional visibility head)."""

from __future__ import annotations

import torch
from torch import nn

from .heads import HeatmapHead, VisibilityHead
from .litehrnet import LiteHRNet, LiteHRNetConfig

__all__ = ["PoseModel", "init_weights"]


def init_weights(model: nn.Module) -> None:
    """The paper's from-scratch initialisation: conv/linear weights ~ N(0, 0.001), biases 0,
    BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PoseModel(nn.Module):
    """Heatmap pose estimator.

    ``forward(images)`` takes ``(B, C, H, W)`` images (H and W multiples of
    :attr:`input_multiple`) and returns ``{"heatmaps": (B, K, H/4, W/4)}`` plus
    ``"visibility": (B, K)`` logits when the visibility head is enabled.
    """

    stride = 4  # heatmaps are at 1/4 of the input resolution

    def __init__(self, config: LiteHRNetConfig, num_keypoints: int = 17, visibility_head: bool = False) -> None:
        super().__init__()
        if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints < 1:
            raise ValueError(f"num_keypoints must be a positive int, got {num_keypoints!r}")
        self.config = config
        self.num_keypoints = num_keypoints
        self.in_channels = config.in_channels
        self.input_multiple = config.input_multiple
        self.backbone = LiteHRNet(config)
        self.head = HeatmapHead(self.backbone.out_channels, num_keypoints)
        self.visibility_head = VisibilityHead(self.backbone.out_channels, num_keypoints) if visibility_head else None
        init_weights(self)

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ValueError unless the network can take an input of ``height`` x ``width``."""
        m = self.input_multiple
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"input {name} must be an int, got {value!r}")
            if value < m or value % m:
                raise ValueError(
                    f"input {name} must be a positive multiple of {m} for this model "
                    f"({self.config.num_branches} branches: the lowest-resolution branch has "
                    f"stride {m}), got {value}; e.g. use {max(m, -(-value // m) * m)}"
                )

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each backbone module during backward (torch.utils.checkpoint, non-reentrant)."""
        self.backbone.set_gradient_checkpointing(enabled)

    @property
    def gradient_checkpointing(self) -> bool:
        return self.backbone.gradient_checkpointing

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != self.in_channels:
            raise ValueError(
                f"images must have shape (B, {self.in_channels}, H, W), got {tuple(images.shape)}"
            )
        self.check_input_size(int(images.shape[2]), int(images.shape[3]))
        features = self.backbone(images)
        out = {"heatmaps": self.head(features)}
        if self.visibility_head is not None:
            out["visibility"] = self.visibility_head(features)
        return out
