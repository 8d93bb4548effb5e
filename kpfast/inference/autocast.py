"""The autocast context of a precision setting, shared by training steps and prediction."""

from __future__ import annotations

import torch

__all__ = ["autocast_context"]


def autocast_context(device: torch.device, precision: str):
    """``torch.autocast`` for ``precision`` ("fp32", "bf16" or "fp16") on ``device``'s type."""
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # CPU autocast supports bf16 only in practice
    return torch.autocast(device_type=device.type, dtype=dtype)
