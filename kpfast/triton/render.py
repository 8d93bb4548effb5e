"""Triton kernels for Op 1, Gaussian heatmap rendering, registered as torch custom ops.

Forward: program (map, row tile) writes a BLOCK_H x BLOCK_W tile of one map once; the Gaussian
is separable, so each instance costs BLOCK_H + BLOCK_W exponentials per tile.
Backward: one program per map reduces the gradient w.r.t. each instance's coordinates and the
map's sigma, routing each pixel to the first maximal instance (as the max-merge does).

Arguments as the compiled op takes them (one launch per call): weights None (every weight 1) and
sigma None (sigma_value for every map) or a (B, K) view with any strides; see
kpfast/triton/gaussian.py load_weight / load_sigma.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpfast.triton._common import (aligned, aligned_geometry, launch, row_alignment, strided_row_alignment,
                                   tile_shape)
from kpfast.triton.gaussian import ENCODINGS, MSRA, gaussian_tile, load_sigma, load_weight


@triton.jit
def _render_forward_kernel(keypoints_ptr, weights_ptr, sigma_ptr, out_ptr, weights_out_ptr, N, K, height, width,
                           sigma_stride_b, sigma_stride_k, sigma_value, HAS_WEIGHTS: tl.constexpr,
                           HAS_SIGMA: tl.constexpr, ENCODING: tl.constexpr, BLOCK_H: tl.constexpr,
                           BLOCK_W: tl.constexpr, ROW_ALIGN: tl.constexpr):
    width = aligned(width, ROW_ALIGN)  # vector stores when rows start 16-byte aligned (_common.row_alignment)
    map_id = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    b = map_id // K
    k = map_id % K
    sigma = load_sigma(sigma_ptr, b, k, sigma_stride_b, sigma_stride_k, sigma_value, HAS_SIGMA)
    row_idx = tile * BLOCK_H + tl.arange(0, BLOCK_H)
    col_idx = tl.arange(0, BLOCK_W)
    rows = row_idx.to(tl.float32)
    cols = col_idx.to(tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for n in range(N):
        idx = (b * N + n) * K + k
        x = tl.load(keypoints_ptr + 2 * idx)
        y = tl.load(keypoints_ptr + 2 * idx + 1)
        weight = load_weight(weights_ptr, idx, HAS_WEIGHTS)
        values, valid, cx, cy, c = gaussian_tile(rows, cols, x, y, weight, sigma, height, width, ENCODING)
        acc = tl.maximum(acc, values)
        if tile == 0:
            tl.store(weights_out_ptr + idx, tl.where(valid, weight, 0.0))
    mask = (row_idx[:, None] < height) & (col_idx[None, :] < width)
    offsets = map_id * height * width + row_idx[:, None] * width + col_idx[None, :]
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _render_backward_kernel(grad_ptr, keypoints_ptr, weights_ptr, sigma_ptr, grad_keypoints_ptr, grad_sigma_ptr, N, K,
                            height, width, grad_maps_stride_b, grad_maps_stride_k, grad_maps_stride_h,
                            grad_maps_stride_w, sigma_stride_b, sigma_stride_k, sigma_value, HAS_WEIGHTS: tl.constexpr,
                            HAS_SIGMA: tl.constexpr, ENCODING: tl.constexpr, BLOCK_H: tl.constexpr,
                            BLOCK_W: tl.constexpr, ROW_ALIGN: tl.constexpr):
    # The upstream gradient is read with its strides (heatmaps.sum()'s is expanded: not copied).
    width, grad_maps_stride_b, grad_maps_stride_k, grad_maps_stride_h = aligned_geometry(
        width, grad_maps_stride_b, grad_maps_stride_k, grad_maps_stride_h, ROW_ALIGN)
    map_id = tl.program_id(0).to(tl.int64)
    b = map_id // K
    k = map_id % K
    sigma = load_sigma(sigma_ptr, b, k, sigma_stride_b, sigma_stride_k, sigma_value, HAS_SIGMA)
    col_idx = tl.arange(0, BLOCK_W)
    cols = col_idx.to(tl.float32)
    grad_sigma = 0.0
    for target in range(N):
        t_idx = (b * N + target) * K + k
        tx = tl.load(keypoints_ptr + 2 * t_idx)
        ty = tl.load(keypoints_ptr + 2 * t_idx + 1)
        tw = load_weight(weights_ptr, t_idx, HAS_WEIGHTS)
        grad_x = 0.0
        grad_y = 0.0
        for row0 in range(0, height, BLOCK_H):
            row_idx = row0 + tl.arange(0, BLOCK_H)
            rows = row_idx.to(tl.float32)
            mask = (row_idx[:, None] < height) & (col_idx[None, :] < width)
            values, valid, cx, cy, c = gaussian_tile(rows, cols, tx, ty, tw, sigma, height, width, ENCODING)
            # The first maximal instance owns a pixel: earlier ones must be strictly smaller,
            # later ones no larger.
            owns = values > 0.0
            for n in range(N):
                idx = (b * N + n) * K + k
                other, _, _, _, _ = gaussian_tile(rows, cols, tl.load(keypoints_ptr + 2 * idx),
                                                  tl.load(keypoints_ptr + 2 * idx + 1),
                                                  load_weight(weights_ptr, idx, HAS_WEIGHTS),
                                                  sigma, height, width, ENCODING)
                beaten = tl.where(n < target, other >= values, other > values)
                owns = owns & ((n == target) | (beaten == 0))
            g = tl.load(grad_ptr + b * grad_maps_stride_b + k * grad_maps_stride_k
                        + row_idx[:, None].to(tl.int64) * grad_maps_stride_h + col_idx[None, :] * grad_maps_stride_w,
                        mask=mask, other=0.0).to(tl.float32)
            upstream = tl.where(owns & mask, g * values, 0.0)
            dx = cols[None, :] - cx
            dy = rows[:, None] - cy
            two_c = 2.0 * c
            grad_x += tl.sum(tl.sum(upstream * dx, axis=1), axis=0) * two_c
            grad_y += tl.sum(tl.sum(upstream * dy, axis=1), axis=0) * two_c
            grad_sigma += tl.sum(tl.sum(upstream * (dx * dx + dy * dy), axis=1), axis=0) * two_c / sigma
        if ENCODING == MSRA:  # MSRA centres are rounded: no gradient w.r.t. the coordinates
            grad_x = grad_x * 0.0
            grad_y = grad_y * 0.0
        tl.store(grad_keypoints_ptr + 2 * t_idx, grad_x)
        tl.store(grad_keypoints_ptr + 2 * t_idx + 1, grad_y)
    tl.store(grad_sigma_ptr + map_id, grad_sigma)


def forward_config(height: int, width: int, encoding: str, has_weights: bool = True, has_sigma: bool = False,
                   element_size: int = 4) -> dict:
    """The constexprs (and launch options) of the forward kernel for an H x W map of
    ``element_size``-byte elements; the defaults of has_weights / has_sigma are the training call
    (visibility weights, a float sigma)."""
    block_h, block_w = tile_shape(height, width)
    return dict(HAS_WEIGHTS=has_weights, HAS_SIGMA=has_sigma, ENCODING=ENCODINGS[encoding], BLOCK_H=block_h,
                BLOCK_W=block_w, ROW_ALIGN=row_alignment(width, element_size))


def backward_config(height: int, width: int, encoding: str, has_weights: bool = True, has_sigma: bool = False,
                    element_size: int = 4, strides: tuple | None = None) -> dict:
    """The forward's, with ROW_ALIGN from the upstream gradient's ``strides`` (None: contiguous),
    and a register ceiling at the kernel's budget: left to itself ptxas took 72 registers and
    spilled 16-24 bytes at 96x72 on sm_80; under 255, 77-255 registers, unspilled (an instance
    loop nested in the pixel tile: the rare coordinate / sigma gradient path)."""
    config = forward_config(height, width, encoding, has_weights, has_sigma, element_size)
    config["ROW_ALIGN"] = strided_row_alignment(width, element_size, strides)
    config["maxnreg"] = 255
    return config


def _optional_arguments(keypoints, weights, sigma):
    """(weights_ptr, sigma_ptr, sigma_stride_b, sigma_stride_k): an absent tensor is replaced by
    keypoints, which the kernel never reads in its place (HAS_WEIGHTS / HAS_SIGMA False)."""
    if sigma is None:
        return (keypoints if weights is None else weights), keypoints, 0, 0
    return (keypoints if weights is None else weights), sigma, sigma.stride(0), sigma.stride(1)


@torch.library.custom_op("kpfast_triton::render_heatmaps", mutates_args=())
def render_heatmaps(keypoints: torch.Tensor, weights: torch.Tensor | None, sigma: torch.Tensor | None,
                    sigma_value: float, height: int, width: int, encoding: str,
                    dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    batch, instances, num_keypoints = keypoints.shape[:3]
    heatmaps = torch.empty((batch, num_keypoints, height, width), dtype=dtype, device=keypoints.device)
    # The kernel writes every element of both outputs (weights_out from the first row tile),
    # so neither is zero-filled first. An empty map (H or W = 0) still needs the weights.
    weights_out = torch.empty((batch, instances, num_keypoints), dtype=keypoints.dtype, device=keypoints.device)
    if batch * num_keypoints == 0:
        return heatmaps, weights_out
    config = forward_config(height, width, encoding, weights is not None, sigma is not None, heatmaps.element_size())
    grid = (batch * num_keypoints, max(1, triton.cdiv(height, config["BLOCK_H"])))
    weights_arg, sigma_arg, stride_b, stride_k = _optional_arguments(keypoints, weights, sigma)
    launch(_render_forward_kernel, grid, keypoints, weights_arg, sigma_arg, heatmaps, weights_out, instances,
           num_keypoints, height, width, stride_b, stride_k, float(sigma_value), **config)
    return heatmaps, weights_out


@torch.library.custom_op("kpfast_triton::render_heatmaps_backward", mutates_args=())
def render_heatmaps_backward(grad_heatmaps: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None,
                             sigma: torch.Tensor | None, sigma_value: float,
                             encoding: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch, instances, num_keypoints = keypoints.shape[:3]
    # Every (map, instance) coordinate and every map's sigma is stored by the kernel: no zero fill.
    # grad_sigma is (B, K) contiguous whatever sigma's form (autograd reduces an expanded one).
    grad_keypoints = torch.empty_like(keypoints)
    grad_sigma = torch.empty((batch, num_keypoints), dtype=keypoints.dtype, device=keypoints.device)
    if batch * num_keypoints == 0:
        return grad_keypoints, grad_sigma
    height, width = grad_heatmaps.shape[-2:]
    weights_arg, sigma_arg, stride_b, stride_k = _optional_arguments(keypoints, weights, sigma)
    launch(_render_backward_kernel, (batch * num_keypoints,),
           grad_heatmaps, keypoints, weights_arg, sigma_arg, grad_keypoints, grad_sigma, instances,
           num_keypoints, height, width, *grad_heatmaps.stride(), stride_b, stride_k, float(sigma_value),
           **backward_config(height, width, encoding, weights is not None, sigma is not None,
           grad_heatmaps.element_size(), grad_heatmaps.stride()))
    return grad_keypoints, grad_sigma
