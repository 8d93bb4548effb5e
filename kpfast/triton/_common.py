"""Helpers shared by every Triton launcher: tile shapes, the launch (device guard and compile
options) and the row alignment.

One copy of each, so the render, loss and decode launchers (and the AOT gate in
tools/triton_aot.py, which enumerates the same specialisations) cannot drift apart.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl


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


# Floating-point contraction (a * b + c as one FMA) in every kpfast Triton kernel, decided here and
# passed at each launch (docs/extension.md, "Compile options"): Triton's own default is on up to
# 3.9 and becomes off in 3.10, which would change the kernels' rounding silently. On: the kernels'
# tolerances against the reference were set with it, and the CUDA kernels contract too (nvcc's
# default --fmad=true).
FP_FUSION = True


def compile_options() -> dict:
    """The launch options every kpfast Triton kernel is compiled with (also by the AOT gate)."""
    return dict(enable_fp_fusion=FP_FUSION)


# CUDA's grid limits: 2**31 - 1 blocks along x, 65535 along y and z. Every launcher puts its
# unbounded axis (maps, or maps x chunks) on x.
MAX_GRID = (2**31 - 1, 65535, 65535)


def check_grid(grid: tuple) -> tuple:
    """``grid``, after checking every axis against MAX_GRID (a launch past a limit fails on the GPU
    with an opaque "invalid argument", or not at all under the interpreter)."""
    if len(grid) > len(MAX_GRID) or any(not 1 <= n <= limit for n, limit in zip(grid, MAX_GRID)):
        raise ValueError(f"kpfast: Triton grid {tuple(grid)} outside CUDA's limits 1..{MAX_GRID} per axis")
    return grid


def launch(kernel, grid, *args, **config) -> None:
    """``kernel[grid](*args, **config)`` on the first argument's GPU, with :func:`compile_options`,
    the grid checked against CUDA's limits."""
    check_grid(grid)
    with device_guard(args[0]):
        kernel[grid](*args, **config, **compile_options())


def row_alignment(width: int, element_size: int, *strides: int) -> int:
    """ROW_ALIGN of the 2-D tile kernels: the largest power of two, up to one 16-byte vector of
    elements, that divides ``width`` and every stride (in elements).

    Triton's launcher tells the compiler only which integers are multiples of 16, so a 96x72 map
    (72 = 8 * 9) would get scalar loads and stores although every fp32 row starts on a 16-byte
    boundary; the kernels rebuild width and strides as multiples of ROW_ALIGN (see ``aligned``)."""
    align = max(1, 16 // max(element_size, 1))
    for value in (width, *strides):
        while align > 1 and value % align:
            align //= 2
    return align


def strided_row_alignment(width: int, element_size: int, strides: tuple | None) -> int:
    """ROW_ALIGN for a (B, K, H, W) tensor the kernel reads with its ``strides`` (None: contiguous)
    and a contiguous gradient of the same width: a row that is not contiguous has no vectors."""
    if strides is None:
        return row_alignment(width, element_size)
    return row_alignment(width, element_size, *strides[:3]) if strides[3] == 1 else 1


@triton.jit
def aligned(value, ALIGN: tl.constexpr):
    """``value``, which the launcher checked is a multiple of ALIGN, rebuilt so that Triton's
    alignment analysis knows it too (a division and a product by a constant, once per program)."""
    if ALIGN > 1:
        value = (value // ALIGN) * ALIGN
    return value


@triton.jit
def aligned_geometry(width, stride_b, stride_k, stride_h, ROW_ALIGN: tl.constexpr):
    """width and a (B, K, H, W) tensor's strides as multiples of ROW_ALIGN (see ``aligned``)."""
    return (aligned(width, ROW_ALIGN), aligned(stride_b, ROW_ALIGN), aligned(stride_k, ROW_ALIGN),
            aligned(stride_h, ROW_ALIGN))
