"""Helpers shared by every Triton launcher: tile shapes and the device guard.

One copy of each, so the render, loss and decode launchers (and the AOT gate in
kpfast/triton/aot.py, which enumerates the same specialisations) cannot drift apart.
"""

from __future__ import annotations

import contextlib

import torch
import triton


def tile_shape(height: int, width: int, max_elements: int = 4096) -> tuple[int, int]:
    """(BLOCK_H, BLOCK_W): a power-of-two tile covering whole rows, at most ``max_elements``.

    Empty sizes still give a valid (1-wide) tile: Triton blocks are never 0 long."""
    block_w = triton.next_power_of_2(max(width, 1))
    block_h = max(1, min(triton.next_power_of_2(max(height, 1)), max_elements // block_w))
    return block_h, block_w


def device_guard(tensor: torch.Tensor):
    """Run a launch on ``tensor``'s GPU, whichever device is current (a no-op for CPU tensors,
    which only the interpreter runs)."""
    if tensor.device.type == "cuda":
        return torch.cuda.device(tensor.device)
    return contextlib.nullcontext()
