"""Building blocks of Lite-HRNet (Yu et al., CVPR 2021).

Attribute names (``conv``, ``bn``, ``branch1``, ``cross_resolution_weighting`` ...) follow the
authors' code and MMPose so that their state dicts map onto these modules key for key.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConvBN",
    "channel_shuffle",
    "Stem",
    "SpatialWeighting",
    "CrossResolutionWeighting",
    "ConditionalChannelWeighting",
    "ShuffleUnit",
    "DepthwiseSeparableConv",
]


class ConvBN(nn.Module):
    """Conv2d + optional BatchNorm + optional activation (the ``ConvModule`` of mmcv).

    As in mmcv the convolution has a bias only when there is no normalisation after it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        groups: int = 1,
        norm: bool = True,
        activation: str | None = "relu",
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=not norm,
        )
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        if activation is None:
            self.activate = None
        elif activation == "relu":
            self.activate = nn.ReLU()
        elif activation == "sigmoid":
            self.activate = nn.Sigmoid()
        else:
            raise ValueError(f"activation must be None, 'relu' or 'sigmoid', got {activation!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.activate is not None:
            x = self.activate(x)
        return x


def depthwise(channels: int, stride: int = 1, activation: str | None = None) -> ConvBN:
    """3x3 depthwise conv + BN (no activation by default, as everywhere in Lite-HRNet)."""
    return ConvBN(channels, channels, 3, stride=stride, groups=channels, activation=activation)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet channel shuffle: interleave the channels of ``groups`` equal groups.

    Channels-last inputs are shuffled in NHWC space so the result stays channels-last with a
    single copy (the usual view/transpose/contiguous would silently return NCHW).
    """
    batch, channels, height, width = x.shape
    per_group = channels // groups
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1).reshape(batch, height, width, groups, per_group)
        nhwc = nhwc.transpose(3, 4).reshape(batch, height, width, channels)
        return nhwc.permute(0, 3, 1, 2)
    x = x.reshape(batch, groups, per_group, height, width).transpose(1, 2)
    return x.reshape(batch, channels, height, width)


class Stem(nn.Module):
    """3x3 s2 conv followed by a stride-2 ShuffleNetV2 unit: output at 1/4 resolution.

    ``expand_ratio`` widens the inner 1x1 of the second half (1 in every published config).
    """

    def __init__(
        self, in_channels: int, stem_channels: int, out_channels: int, expand_ratio: float = 1.0
    ) -> None:
        super().__init__()
        if stem_channels % 2:
            raise ValueError(f"stem_channels must be even, got {stem_channels}")
        self.out_channels = out_channels
        mid_channels = int(round(stem_channels * expand_ratio))
        branch_channels = stem_channels // 2
        # Same channel bookkeeping as the official Stem, so out_channels != stem_channels works.
        if stem_channels == out_channels:
            inc_channels = out_channels - branch_channels
            linear_out = branch_channels
        else:
            inc_channels = out_channels - stem_channels
            linear_out = stem_channels
        if inc_channels <= 0:
            raise ValueError(
                f"stem out_channels ({out_channels}) too small for stem_channels ({stem_channels})"
            )
        self.conv1 = ConvBN(in_channels, stem_channels, 3, stride=2)
        self.branch1 = nn.Sequential(
            depthwise(branch_channels, stride=2),
            ConvBN(branch_channels, inc_channels, 1),
        )
        self.expand_conv = ConvBN(branch_channels, mid_channels, 1)
        self.depthwise_conv = depthwise(mid_channels, stride=2)
        self.linear_conv = ConvBN(mid_channels, linear_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x1, x2 = x.chunk(2, dim=1)
        x2 = self.linear_conv(self.depthwise_conv(self.expand_conv(x2)))
        return channel_shuffle(torch.cat((self.branch1(x1), x2), dim=1), 2)


class SpatialWeighting(nn.Module):
    """Squeeze-and-excitation over one branch: GAP -> 1x1 -> ReLU -> 1x1 -> sigmoid (no BN)."""

    def __init__(self, channels: int, ratio: int = 4) -> None:
        super().__init__()
        hidden = int(channels / ratio)
        if hidden < 1:
            raise ValueError(f"SpatialWeighting: channels ({channels}) / ratio ({ratio}) < 1")
        self.conv1 = ConvBN(channels, hidden, 1, norm=False, activation="relu")
        self.conv2 = ConvBN(hidden, channels, 1, norm=False, activation="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1)))
        return x * weights


class CrossResolutionWeighting(nn.Module):
    """Channel weights computed from all branches pooled to the smallest resolution.

    Branch ``i`` is exactly ``2**(n-1-i)`` times larger than the smallest one (the model checks
    input sizes so that holds), so adaptive pooling is a plain average pool and upsampling is an
    integer nearest-neighbour repeat; written that way it exports to ONNX and compiles cleanly.
    """

    def __init__(self, channels: Sequence[int], ratio: int) -> None:
        super().__init__()
        self.channels = list(channels)
        total = sum(self.channels)
        hidden = int(total / ratio)
        if hidden < 1:
            raise ValueError(f"CrossResolutionWeighting: sum(channels)={total} / ratio={ratio} < 1")
        self.conv1 = ConvBN(total, hidden, 1, activation="relu")
        self.conv2 = ConvBN(hidden, total, 1, activation="sigmoid")

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        last = len(xs) - 1
        pooled = []
        for i, x in enumerate(xs):
            factor = 2 ** (last - i)
            pooled.append(F.avg_pool2d(x, factor, factor) if factor > 1 else x)
        weights = self.conv2(self.conv1(torch.cat(pooled, dim=1)))
        out = []
        for i, (x, w) in enumerate(zip(xs, torch.split(weights, self.channels, dim=1))):
            factor = 2 ** (last - i)
            if factor > 1:
                w = F.interpolate(w, scale_factor=float(factor), mode="nearest")
            out.append(x * w)
        return out


class ConditionalChannelWeighting(nn.Module):
    """The Lite-HRNet block: half the channels of every branch pass unchanged; the other half
    goes through cross-resolution weighting, a 3x3 depthwise conv and spatial weighting; then
    both halves are concatenated and channel-shuffled."""

    def __init__(self, in_channels: Sequence[int], reduce_ratio: int) -> None:
        super().__init__()
        branch_channels = [c // 2 for c in in_channels]
        self.cross_resolution_weighting = CrossResolutionWeighting(branch_channels, reduce_ratio)
        self.depthwise_convs = nn.ModuleList(depthwise(c) for c in branch_channels)
        self.spatial_weighting = nn.ModuleList(SpatialWeighting(c, ratio=4) for c in branch_channels)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        halves = [x.chunk(2, dim=1) for x in xs]
        identity = [h[0] for h in halves]
        weighted = self.cross_resolution_weighting([h[1] for h in halves])
        weighted = [sw(dw(x)) for x, dw, sw in zip(weighted, self.depthwise_convs, self.spatial_weighting)]
        return [channel_shuffle(torch.cat((a, b), dim=1), 2) for a, b in zip(identity, weighted)]


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1 here), the block of the *naive* Lite-HRNet."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.stride = stride
        branch_features = out_channels // 2
        if stride == 1 and in_channels != branch_features * 2:
            raise ValueError(
                f"ShuffleUnit with stride 1 needs in_channels == out_channels (even), "
                f"got {in_channels} and {out_channels}"
            )
        if stride > 1:
            self.branch1 = nn.Sequential(
                depthwise(in_channels, stride=stride),
                ConvBN(in_channels, branch_features, 1),
            )
        self.branch2 = nn.Sequential(
            ConvBN(in_channels if stride > 1 else branch_features, branch_features, 1),
            depthwise(branch_features, stride=stride),
            ConvBN(branch_features, branch_features, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        else:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        return channel_shuffle(out, 2)


class DepthwiseSeparableConv(nn.Module):
    """3x3 depthwise conv + BN, then 1x1 conv + BN + ReLU (mmcv ``DepthwiseSeparableConvModule``
    as the iterative head configures it)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.depthwise_conv = depthwise(in_channels)
        self.pointwise_conv = ConvBN(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))
