"""Triton kernels for Op 1, Gaussian heatmap rendering, registered as torch custom ops.

Forward: program (map, row tile) writes a BLOCK_H x BLOCK_W tile of one map once; the Gaussian
is separable, so each instance costs BLOCK_H + BLOCK_W exponentials per tile.
Backward: one program per map reduces the gradient w.r.t. each instance's coordinates and the
map's sigma, routing each pixel to the first maximal instance (as the max-merge does).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpfast.triton._common import device_guard, tile_shape
from kpfast.triton.gaussian import ENCODINGS, gaussian_tile


@triton.jit
def _render_forward_kernel(keypoints_ptr, weights_ptr, sigma_ptr, out_ptr, weights_out_ptr, N, K, height, width,
                           ENCODING: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    map_id = tl.program_id(0).to(tl.int64)
    tile = tl.program_id(1)
    b = map_id // K
    k = map_id % K
    sigma = tl.load(sigma_ptr + map_id)
    row_idx = tile * BLOCK_H + tl.arange(0, BLOCK_H)
    col_idx = tl.arange(0, BLOCK_W)
    rows = row_idx.to(tl.float32)
    cols = col_idx.to(tl.float32)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for n in range(N):
        idx = (b * N + n) * K + k
        x = tl.load(keypoints_ptr + 2 * idx)
        y = tl.load(keypoints_ptr + 2 * idx + 1)
        weight = tl.load(weights_ptr + idx)
        values, valid, cx, cy, c = gaussian_tile(rows, cols, x, y, weight, sigma, height, width, ENCODING)
        acc = tl.maximum(acc, values)
        if tile == 0:
            tl.store(weights_out_ptr + idx, tl.where(valid, weight, 0.0))
    mask = (row_idx[:, None] < height) & (col_idx[None, :] < width)
    offsets = map_id * height * width + row_idx[:, None] * width + col_idx[None, :]
    tl.store(out_ptr + offsets, acc.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _render_backward_kernel(grad_ptr, keypoints_ptr, weights_ptr, sigma_ptr, grad_keypoints_ptr, grad_sigma_ptr, N, K,
                            height, width, ENCODING: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    map_id = tl.program_id(0).to(tl.int64)
    b = map_id // K
    k = map_id % K
    sigma = tl.load(sigma_ptr + map_id)
    col_idx = tl.arange(0, BLOCK_W)
    cols = col_idx.to(tl.float32)
    grad_sigma = 0.0
    for target in range(N):
        t_idx = (b * N + target) * K + k
        tx = tl.load(keypoints_ptr + 2 * t_idx)
        ty = tl.load(keypoints_ptr + 2 * t_idx + 1)
        tw = tl.load(weights_ptr + t_idx)
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
                                                  tl.load(keypoints_ptr + 2 * idx + 1), tl.load(weights_ptr + idx),
                                                  sigma, height, width, ENCODING)
                beaten = tl.where(n < target, other >= values, other > values)
                owns = owns & ((n == target) | (beaten == 0))
            g = tl.load(grad_ptr + map_id * height * width + row_idx[:, None] * width + col_idx[None, :], mask=mask,
                        other=0.0).to(tl.float32)
            upstream = tl.where(owns & mask, g * values, 0.0)
            dx = cols[None, :] - cx
            dy = rows[:, None] - cy
            two_c = 2.0 * c
            grad_x += tl.sum(tl.sum(upstream * dx, axis=1), axis=0) * two_c
            grad_y += tl.sum(tl.sum(upstream * dy, axis=1), axis=0) * two_c
            grad_sigma += tl.sum(tl.sum(upstream * (dx * dx + dy * dy), axis=1), axis=0) * two_c / sigma
        if ENCODING == 0:  # MSRA centres are rounded: no gradient w.r.t. the coordinates
            grad_x = grad_x * 0.0
            grad_y = grad_y * 0.0
        tl.store(grad_keypoints_ptr + 2 * t_idx, grad_x)
        tl.store(grad_keypoints_ptr + 2 * t_idx + 1, grad_y)
    tl.store(grad_sigma_ptr + map_id, grad_sigma)


def forward_config(height: int, width: int, encoding: str) -> dict:
    """The constexprs (and launch options) of the forward kernel for an H x W map."""
    block_h, block_w = tile_shape(height, width)
    return dict(ENCODING=ENCODINGS[encoding], BLOCK_H=block_h, BLOCK_W=block_w)


def backward_config(height: int, width: int, encoding: str) -> dict:
    return forward_config(height, width, encoding)


@torch.library.custom_op("kpfast_triton::render_heatmaps", mutates_args=())
def render_heatmaps(keypoints: torch.Tensor, weights: torch.Tensor, sigma: torch.Tensor, height: int, width: int,
                    encoding: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    batch, instances, num_keypoints = keypoints.shape[:3]
    heatmaps = torch.empty((batch, num_keypoints, height, width), dtype=dtype, device=keypoints.device)
    # The kernel writes every element of both outputs (weights_out from the first row tile),
    # so neither is zero-filled first. An empty map (H or W = 0) still needs the weights.
    weights_out = torch.empty_like(weights)
    if batch * num_keypoints == 0:
        return heatmaps, weights_out
    config = forward_config(height, width, encoding)
    grid = (batch * num_keypoints, max(1, triton.cdiv(height, config["BLOCK_H"])))
    with device_guard(keypoints):
        _render_forward_kernel[grid](keypoints, weights, sigma, heatmaps, weights_out, instances, num_keypoints,
                                     height, width, **config)
    return heatmaps, weights_out


@torch.library.custom_op("kpfast_triton::render_heatmaps_backward", mutates_args=())
def render_heatmaps_backward(grad_heatmaps: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor,
                             sigma: torch.Tensor, encoding: str) -> tuple[torch.Tensor, torch.Tensor]:
    batch, instances, num_keypoints = keypoints.shape[:3]
    # Every (map, instance) coordinate and every map's sigma is stored by the kernel: no zero fill.
    grad_keypoints = torch.empty_like(keypoints)
    grad_sigma = torch.empty_like(sigma)
    if batch * num_keypoints == 0:
        return grad_keypoints, grad_sigma
    height, width = grad_heatmaps.shape[-2:]
    with device_guard(keypoints):
        _render_backward_kernel[(batch * num_keypoints,)](
            grad_heatmaps.contiguous(), keypoints, weights, sigma, grad_keypoints, grad_sigma, instances,
            num_keypoints, height, width, **backward_config(height, width, encoding))
    return grad_keypoints, grad_sigma
