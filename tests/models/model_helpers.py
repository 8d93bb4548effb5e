"""Shared helpers for the model tests."""

from __future__ import annotations

import math

import torch
from torch import nn

# Small variants keep CPU tests fast; the structure (stem, 3 stages, 4 branches, fuse, head) is
# the full one, only the repetition counts are reduced.
TINY = dict(num_modules=(1, 1, 1), num_blocks=(1, 1, 1))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every layer O(1)-scale weights and non-trivial BN statistics.

    The paper's init (std 0.001) makes every activation tiny, which would let equivalence tests
    pass with any arithmetic; this makes the outputs depend on every layer.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=generator))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=generator))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=generator))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator))
    return model
