"""Triton kernels for Op 2, the fused weighted heatmap loss, registered as torch custom ops.

One program per map (b, k) walks the map in BLOCK_H x BLOCK_W tiles, rebuilds the Gaussian
target of the tile from the keypoints (kpfast/triton/gaussian.py, the rule of every backend)
and applies the pixel formula (the same as csrc/kpfast/loss.h). The forward reads pred once and
writes the map's loss sum and positive count; the backward reads pred once and writes the
gradient once. No target or weight tensor exists outside registers.

Arguments follow the one-launch convention of every backend (kpfast.ops._checks): weights may be
None (HAS_WEIGHTS=False: every weight 1) and sigma None (HAS_SIGMA=False: ``sigma_value`` for every
map) or a (B, K) view with any strides (an expanded (K,) sigma). The default exponents (focal
gamma 2, cornernet alpha 2 / beta 4) are compiled as products (FIXED, the policy of
csrc/kpfast/loss.h ``fixed_exponents``); other exponents take the general exp(g log x) powers.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from kpfast.triton._common import aligned_geometry, launch, strided_row_alignment, tile_shape
from kpfast.triton.gaussian import ENCODINGS, gaussian_tile, gaussian_window
from kpfast.vocabulary import FUSED_GRADIENT_LOSS_KINDS, LOSS_KIND_CODES

# The codes of kpfast/vocabulary.py (the KIND constexpr the kernels are compiled for).
KINDS = LOSS_KIND_CODES
MSE = tl.constexpr(LOSS_KIND_CODES["mse"])
FOCAL = tl.constexpr(LOSS_KIND_CODES["focal"])


@triton.jit
def _sign(v):
    return tl.where(v > 0.0, 1.0, tl.where(v < 0.0, -1.0, 0.0))


@triton.jit
def _pow_nonneg(x, g):
    """x^g for x >= 0 (0^0 = 1), without libdevice (the interpreter has none)."""
    # log() only sees x > 0 (1.0 elsewhere). No tiny clamp literal: a subnormal float32 constant
    # such as 1e-38 is typed float64 by Triton and drags the whole expression into float64.
    general = tl.where(x > 0.0, tl.exp(g * tl.log(tl.where(x > 0.0, x, 1.0))), tl.where(g == 0.0, 1.0, 0.0))
    return tl.where(g == 2.0, x * x, tl.where(g == 4.0, (x * x) * (x * x), tl.where(g == 1.0, x, general)))


@triton.jit
def _logit_parts(z):
    """p = sigmoid(z), q = 1 - p, softplus(z), softplus(-z) from one exp and one log: finite for any finite z."""
    e = tl.exp(-tl.abs(z))  # in (0, 1]
    u = 1.0 + e
    # log1p(e) without libdevice: log(u) * e / (u - 1) corrects the rounding of 1 + e.
    log_term = tl.where(u == 1.0, e, tl.log(u) * e / tl.where(u == 1.0, 1.0, u - 1.0))
    inv = 1.0 / u
    small = e * inv
    nonneg = z >= 0.0
    p = tl.where(nonneg, inv, small)
    q = tl.where(nonneg, small, inv)
    return p, q, tl.maximum(z, 0.0) + log_term, tl.maximum(-z, 0.0) + log_term


@triton.jit
def _pixel_loss(x, t, positive, alpha, gamma, beta, l1_weight, KIND: tl.constexpr, GRADIENT: tl.constexpr,
                FIXED: tl.constexpr):
    """The unweighted loss of each pixel, or (GRADIENT) its derivative w.r.t. x.

    FIXED: gamma is 2 (focal), alpha 2 and beta 4 (cornernet), whatever the arguments hold."""
    if KIND == MSE:
        d = x - t
        if GRADIENT:
            value = 2.0 * d + l1_weight * _sign(d)
        else:
            value = d * d + l1_weight * tl.abs(d)
    else:
        p, q, softplus_pos, softplus_neg = _logit_parts(x)
        pq = p * q
        diff = p - t
        if KIND == FOCAL:
            alpha_t = alpha * t + (1.0 - alpha) * (1.0 - t)
            bce = t * softplus_neg + (1.0 - t) * softplus_pos
            if FIXED:
                # |t - p|^2 = diff^2, d diff^2 / dz = 2 diff p q: no abs, sign or select.
                modulation = diff * diff
                if GRADIENT:
                    value = alpha_t * (2.0 * diff * pq * bce + modulation * diff)
                else:
                    value = alpha_t * modulation * bce
            else:
                d = tl.abs(diff)
                modulation = _pow_nonneg(d, gamma)
                if GRADIENT:
                    d_modulation = tl.where(d > 0.0, gamma * _pow_nonneg(d, gamma - 1.0) * _sign(diff) * pq, 0.0)
                    value = alpha_t * (d_modulation * bce + modulation * diff)
                else:
                    value = alpha_t * modulation * bce
        else:  # cornernet
            if FIXED:
                u = 1.0 - t  # (1 - t)^4: an even power, no clamp
                u2 = u * u
                qa = q * q
                neg = (u2 * u2) * (p * p)
                a = 2.0
            else:
                qa = _pow_nonneg(q, alpha)
                neg = _pow_nonneg(tl.maximum(1.0 - t, 0.0), beta) * _pow_nonneg(p, alpha)
                a = alpha
            if GRADIENT:
                value = tl.where(positive, -qa * (a * p * softplus_neg + q), neg * (a * q * softplus_pos + p))
            else:
                value = tl.where(positive, qa * softplus_neg, neg * softplus_pos)
        if GRADIENT:
            value = value + l1_weight * _sign(diff) * pq
        else:
            value = value + l1_weight * tl.abs(diff)
    return value


@triton.jit
def _weight(weights_ptr, idx, HAS_WEIGHTS: tl.constexpr):
    if HAS_WEIGHTS:
        return tl.load(weights_ptr + idx)
    else:
        return 1.0


@triton.jit
def _map_sigma(sigma_ptr, b, k, sigma_stride_b, sigma_stride_k, sigma_value, HAS_SIGMA: tl.constexpr):
    if HAS_SIGMA:
        return tl.load(sigma_ptr + b * sigma_stride_b + k * sigma_stride_k)
    else:
        return sigma_value


@triton.jit
def _map_weight(keypoints_ptr, weights_ptr, sigma, b, k, N, K, height, width, ENCODING: tl.constexpr,
                HAS_WEIGHTS: tl.constexpr):
    """Max over instances of the render rule's output weight (0: the map is ignored)."""
    m = 0.0
    for n in range(N):
        idx = (b * N + n) * K + k
        weight = _weight(weights_ptr, idx, HAS_WEIGHTS)
        valid, _, _, _, _, _, _, _ = gaussian_window(tl.load(keypoints_ptr + 2 * idx),
                                                     tl.load(keypoints_ptr + 2 * idx + 1), weight, sigma, height,
                                                     width, ENCODING)
        m = tl.maximum(m, tl.where(valid, weight, 0.0))
    return m


@triton.jit
def _target_tile(keypoints_ptr, weights_ptr, sigma, b, k, N, K, rows, cols, height, width, ENCODING: tl.constexpr,
                 HAS_WEIGHTS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """(target, positive) of a tile: the max over instances, and the pixels floor(kp + 0.5) of valid ones."""
    target = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    positive = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for n in range(N):
        idx = (b * N + n) * K + k
        x = tl.load(keypoints_ptr + 2 * idx)
        y = tl.load(keypoints_ptr + 2 * idx + 1)
        values, valid, _, _, _ = gaussian_tile(rows, cols, x, y, _weight(weights_ptr, idx, HAS_WEIGHTS), sigma,
                                               height, width, ENCODING)
        target = tl.maximum(target, values)
        hit = (rows[:, None] == tl.floor(y + 0.5)) & (cols[None, :] == tl.floor(x + 0.5))
        positive = tl.maximum(positive, tl.where(hit, tl.where(valid, 1.0, 0.0), 0.0))
    return target, positive


@triton.jit
def _map_setup(keypoints_ptr, weights_ptr, sigma_ptr, N, K, height, width, sigma_stride_b, sigma_stride_k,
               sigma_value, ENCODING: tl.constexpr, HAS_WEIGHTS: tl.constexpr, HAS_SIGMA: tl.constexpr):
    """(map_id, b, k, sigma, m) of this program's map; m is the map weight (0: the map is ignored)."""
    map_id = tl.program_id(0).to(tl.int64)
    b = map_id // K
    k = map_id % K
    sigma = _map_sigma(sigma_ptr, b, k, sigma_stride_b, sigma_stride_k, sigma_value, HAS_SIGMA)
    m = _map_weight(keypoints_ptr, weights_ptr, sigma, b, k, N, K, height, width, ENCODING, HAS_WEIGHTS)
    return map_id, b, k, sigma, m


@triton.jit
def _row_tile(keypoints_ptr, weights_ptr, sigma, b, k, N, K, row0, col_idx, cols, height, width, stride_b, stride_k,
              stride_h, stride_w, threshold, keypoint_weight, background_weight, ENCODING: tl.constexpr,
              HAS_WEIGHTS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """The tile of rows row0 .. row0 + BLOCK_H shared by the forward, backward and fused kernels:
    (row_idx, mask, target, positive, pixel weight, pred offsets), the target rendered on the fly."""
    row_idx = row0 + tl.arange(0, BLOCK_H)
    rows = row_idx.to(tl.float32)
    mask = (row_idx[:, None] < height) & (col_idx[None, :] < width)
    target, positive = _target_tile(keypoints_ptr, weights_ptr, sigma, b, k, N, K, rows, cols, height, width,
                                    ENCODING, HAS_WEIGHTS, BLOCK_H, BLOCK_W)
    w = tl.where(target > threshold, keypoint_weight, background_weight)
    offsets = b * stride_b + k * stride_k + row_idx[:, None].to(tl.int64) * stride_h + col_idx[None, :] * stride_w
    return row_idx, mask, target, positive, w, offsets


@triton.jit
def _loss_forward_kernel(pred_ptr, keypoints_ptr, weights_ptr, sigma_ptr, map_losses_ptr, positives_ptr, N, K, height,
                         width, stride_b, stride_k, stride_h, stride_w, sigma_stride_b, sigma_stride_k, sigma_value,
                         alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight,
                         ENCODING: tl.constexpr, KIND: tl.constexpr, FIXED: tl.constexpr, HAS_WEIGHTS: tl.constexpr,
                         HAS_SIGMA: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                         ROW_ALIGN: tl.constexpr):
    width, stride_b, stride_k, stride_h = aligned_geometry(width, stride_b, stride_k, stride_h, ROW_ALIGN)
    map_id, b, k, sigma, m = _map_setup(keypoints_ptr, weights_ptr, sigma_ptr, N, K, height, width, sigma_stride_b,
                                        sigma_stride_k, sigma_value, ENCODING, HAS_WEIGHTS, HAS_SIGMA)
    col_idx = tl.arange(0, BLOCK_W)
    cols = col_idx.to(tl.float32)
    total = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    count = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for row0 in range(0, height, BLOCK_H):
        row_idx, mask, target, positive, w, offsets = _row_tile(
            keypoints_ptr, weights_ptr, sigma, b, k, N, K, row0, col_idx, cols, height, width, stride_b, stride_k,
            stride_h, stride_w, threshold, keypoint_weight, background_weight, ENCODING, HAS_WEIGHTS, BLOCK_H, BLOCK_W)
        x = tl.load(pred_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        loss = _pixel_loss(x, target, positive > 0.0, alpha, gamma, beta, l1_weight, KIND, False, FIXED)
        # An ignored map contributes exactly 0, whatever pred holds.
        total += tl.where(mask, tl.where(m > 0.0, w * loss, 0.0), 0.0)
        count += tl.where(mask, positive, 0.0)
    tl.store(map_losses_ptr + map_id, tl.sum(tl.sum(total, axis=1), axis=0) * m)
    tl.store(positives_ptr + map_id, tl.sum(tl.sum(count, axis=1), axis=0))


@triton.jit
def _loss_backward_kernel(upstream_ptr, pred_ptr, keypoints_ptr, weights_ptr, sigma_ptr, grad_ptr, N, K, height, width,
                          stride_b, stride_k, stride_h, stride_w, sigma_stride_b, sigma_stride_k, upstream_stride_b,
                          upstream_stride_k, sigma_value, alpha, gamma, beta, keypoint_weight, background_weight,
                          threshold, l1_weight, ENCODING: tl.constexpr, KIND: tl.constexpr, FIXED: tl.constexpr,
                          HAS_WEIGHTS: tl.constexpr, HAS_SIGMA: tl.constexpr, BLOCK_H: tl.constexpr,
                          BLOCK_W: tl.constexpr, ROW_ALIGN: tl.constexpr):
    width, stride_b, stride_k, stride_h = aligned_geometry(width, stride_b, stride_k, stride_h, ROW_ALIGN)
    map_id, b, k, sigma, m = _map_setup(keypoints_ptr, weights_ptr, sigma_ptr, N, K, height, width, sigma_stride_b,
                                        sigma_stride_k, sigma_value, ENCODING, HAS_WEIGHTS, HAS_SIGMA)
    upstream = tl.load(upstream_ptr + b * upstream_stride_b + k * upstream_stride_k)
    scale = upstream * m
    # An ignored map, or a map OHKM dropped, gets exact zeros without reading pred. (A 2-D mask:
    # the interpreter cannot broadcast a scalar bool into `&`.)
    skip = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32) + tl.where((m == 0.0) | (upstream == 0.0), 1.0, 0.0) > 0.0
    col_idx = tl.arange(0, BLOCK_W)
    cols = col_idx.to(tl.float32)
    for row0 in range(0, height, BLOCK_H):
        row_idx, mask, target, positive, w, offsets = _row_tile(
            keypoints_ptr, weights_ptr, sigma, b, k, N, K, row0, col_idx, cols, height, width, stride_b, stride_k,
            stride_h, stride_w, threshold, keypoint_weight, background_weight, ENCODING, HAS_WEIGHTS, BLOCK_H, BLOCK_W)
        x = tl.load(pred_ptr + offsets, mask=mask & (skip == 0), other=0.0).to(tl.float32)
        grad = _pixel_loss(x, target, positive > 0.0, alpha, gamma, beta, l1_weight, KIND, True, FIXED)
        grad = tl.where(skip, 0.0, scale * (w * grad))
        out = map_id * height * width + row_idx[:, None] * width + col_idx[None, :]
        # (.to(float32) first: the interpreter may widen the math to float64, whose bf16 cast it gets wrong.)
        tl.store(grad_ptr + out, grad.to(tl.float32).to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _loss_fused_forward_kernel(pred_ptr, keypoints_ptr, weights_ptr, sigma_ptr, map_losses_ptr, positives_ptr, grad_ptr,
                               N, K, height, width, stride_b, stride_k, stride_h, stride_w, sigma_stride_b,
                               sigma_stride_k, sigma_value, expected_upstream, alpha, gamma, beta, keypoint_weight,
                               background_weight, threshold, l1_weight, ENCODING: tl.constexpr, KIND: tl.constexpr,
                               FIXED: tl.constexpr, HAS_WEIGHTS: tl.constexpr, HAS_SIGMA: tl.constexpr,
                               BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ROW_ALIGN: tl.constexpr):
    """The forward that also writes the gradient for the upstream ``expected_upstream`` (the
    gradient-in-forward opt-in, kpfast/ops/_loss_registration.py): one read of pred, one write of grad."""
    width, stride_b, stride_k, stride_h = aligned_geometry(width, stride_b, stride_k, stride_h, ROW_ALIGN)
    map_id, b, k, sigma, m = _map_setup(keypoints_ptr, weights_ptr, sigma_ptr, N, K, height, width, sigma_stride_b,
                                        sigma_stride_k, sigma_value, ENCODING, HAS_WEIGHTS, HAS_SIGMA)
    scale = expected_upstream * m
    col_idx = tl.arange(0, BLOCK_W)
    cols = col_idx.to(tl.float32)
    total = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    count = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.float32)
    for row0 in range(0, height, BLOCK_H):
        row_idx, mask, target, positive, w, offsets = _row_tile(
            keypoints_ptr, weights_ptr, sigma, b, k, N, K, row0, col_idx, cols, height, width, stride_b, stride_k,
            stride_h, stride_w, threshold, keypoint_weight, background_weight, ENCODING, HAS_WEIGHTS, BLOCK_H, BLOCK_W)
        x = tl.load(pred_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        loss = _pixel_loss(x, target, positive > 0.0, alpha, gamma, beta, l1_weight, KIND, False, FIXED)
        grad = _pixel_loss(x, target, positive > 0.0, alpha, gamma, beta, l1_weight, KIND, True, FIXED)
        # An ignored map contributes exactly 0 and gets a zero gradient, whatever pred holds.
        total += tl.where(mask, tl.where(m > 0.0, w * loss, 0.0), 0.0)
        count += tl.where(mask, positive, 0.0)
        grad = tl.where(m > 0.0, scale * (w * grad), 0.0)
        out = map_id * height * width + row_idx[:, None] * width + col_idx[None, :]
        tl.store(grad_ptr + out, grad.to(tl.float32).to(grad_ptr.dtype.element_ty), mask=mask)
    tl.store(map_losses_ptr + map_id, tl.sum(tl.sum(total, axis=1), axis=0) * m)
    tl.store(positives_ptr + map_id, tl.sum(tl.sum(count, axis=1), axis=0))


@triton.jit
def _loss_rescale_kernel(grad_ptr, upstream_ptr, upstream_stride_b, upstream_stride_k, K, map_size,
                         expected_upstream, BLOCK: tl.constexpr):
    """The first backward of the gradient-in-forward opt-in, one program per map: nothing where the
    upstream equals the one the forward assumed (no traffic), zeros where it is 0 (write only),
    an in-place rescale elsewhere. The test is made on the device: no host sync."""
    map_id = tl.program_id(0).to(tl.int64)
    b = map_id // K
    k = map_id % K
    upstream = tl.load(upstream_ptr + b * upstream_stride_b + k * upstream_stride_k)
    ratio = upstream / expected_upstream
    # A zero trip count where the upstream matches: the map is not touched.
    end = tl.where(upstream == expected_upstream, 0, map_size)
    base = map_id * map_size
    # Upstream 0: write zeros without reading (a block-shaped mask: the interpreter cannot broadcast
    # a scalar bool into `&`).
    read = (tl.zeros((BLOCK,), dtype=tl.float32) + tl.where(upstream != 0.0, 1.0, 0.0)) > 0.0
    for start in range(0, end, BLOCK):
        offsets = start + tl.arange(0, BLOCK)
        mask = offsets < map_size
        g = tl.load(grad_ptr + base + offsets, mask=mask & read, other=0.0).to(tl.float32)
        tl.store(grad_ptr + base + offsets, (g * ratio).to(grad_ptr.dtype.element_ty), mask=mask)


RESCALE_BLOCK = 1024


def fixed_exponents(kind: str, alpha: float, gamma: float, beta: float) -> bool:
    """The exponent policy of csrc/kpfast/loss.h: the default exponents are compiled as products."""
    if kind == "focal":
        return gamma == 2.0
    if kind == "cornernet":
        return alpha == 2.0 and beta == 4.0
    return True


def exponent_variants(kind: str) -> tuple[bool, ...]:
    """The ``FIXED`` values a launch of ``kind`` can take (tools/triton_aot.py compiles each):
    the general powers only for a kind whose fixed_exponents reads an exponent (NaN is no default)."""
    return (True,) if fixed_exponents(kind, math.nan, math.nan, math.nan) else (True, False)


def launch_config(height: int, width: int, encoding: str, kind: str, fixed: bool = True, has_weights: bool = True,
                  has_sigma: bool = True, element_size: int = 4, strides: tuple | None = None) -> dict:
    """The constexprs (and launch options) of the forward and backward kernels for an H x W map of
    ``element_size``-byte predictions with ``strides`` (None: contiguous)."""
    # Tile size and warps per loss kind, the largest that compile without register spills on sm_80
    # and sm_90 for every encoding, dtype, instance and exponent variant (tools/triton_aot.py;
    # table in benchmarks/results/RESOURCES.md). 4096-pixel tiles at 4 warps spilled up to 9 KB per
    # thread in focal/cornernet; the cornernet forward (two loop-carried tiles, two powers per pixel)
    # still spilled at 2048 over 8 warps, and the bf16 focal backward with the instance axis at 2048.
    max_elements, num_warps = TILE_BY_KIND[kind]
    if kind == "cornernet" and not fixed:
        # The general powers (three exp(g log x) per pixel): at 4 warps the bf16 dark forward took
        # 72 registers and spilled 4 bytes on sm_90; 8 warps (2 pixels per thread) take 52, no spill.
        num_warps = 8
    block_h, block_w = tile_shape(height, width, max_elements=max_elements)
    row_align = strided_row_alignment(width, element_size, strides)  # pred's, and the gradient's width
    config = dict(ENCODING=ENCODINGS[encoding], KIND=KINDS[kind], FIXED=bool(fixed), HAS_WEIGHTS=bool(has_weights),
                  HAS_SIGMA=bool(has_sigma), BLOCK_H=block_h, BLOCK_W=block_w, ROW_ALIGN=row_align,
                  num_warps=num_warps)
    if kind in MAX_REGISTERS_BY_KIND:
        config["maxnreg"] = MAX_REGISTERS_BY_KIND[kind]
    return config


# A register ceiling (launch option maxnreg) where ptxas, left to itself, spilled: the mse forward
# (udp, several instances, 16-bit pred, 96x72 on sm_80: 64 registers and 12 bytes spilled); under
# 128 every mse variant takes 48-116, unspilled. Not for focal / cornernet, which do not spill and
# under a ceiling take more registers (59-96 instead of 39-64), so fewer warps per SM.
MAX_REGISTERS_BY_KIND = {"mse": 128}


# kind -> (pixels per tile, warps per program)
TILE_BY_KIND = {"mse": (2048, 8), "focal": (1024, 8), "cornernet": (512, 4)}


def _launch_args(pred, weights, sigma, encoding, kind, alpha, gamma, beta):
    return launch_config(pred.shape[2], pred.shape[3], encoding, kind, fixed_exponents(kind, alpha, gamma, beta),
                         weights is not None, sigma is not None, pred.element_size(), pred.stride())


def _optional_arguments(keypoints, weights, sigma):
    """(weights_ptr, sigma_ptr, sigma_stride_b, sigma_stride_k): an absent tensor is passed as keypoints,
    which the kernel never reads through that argument (HAS_WEIGHTS / HAS_SIGMA are False)."""
    if sigma is None:
        return (keypoints if weights is None else weights), keypoints, 0, 0
    return (keypoints if weights is None else weights), sigma, sigma.stride(0), sigma.stride(1)


@torch.library.custom_op("kpfast_triton::heatmap_loss", mutates_args=())
def heatmap_loss(pred: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None,
                 sigma: torch.Tensor | None, sigma_value: float, encoding: str, kind: str, alpha: float, gamma: float,
                 beta: float, keypoint_weight: float, background_weight: float, threshold: float,
                 l1_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    batch, instances, num_keypoints = keypoints.shape[:3]
    # Every map's sum and count is stored by the kernel (an H*W = 0 map stores 0): no zero fill.
    map_losses = torch.empty((batch, num_keypoints), dtype=torch.float32, device=pred.device)
    positives = torch.empty_like(map_losses)
    if batch * num_keypoints == 0:
        return map_losses, positives
    weights_arg, sigma_arg, sigma_stride_b, sigma_stride_k = _optional_arguments(keypoints, weights, sigma)
    launch(_loss_forward_kernel, (batch * num_keypoints,),
           pred, keypoints, weights_arg, sigma_arg, map_losses, positives, instances, num_keypoints, pred.shape[2],
           pred.shape[3], *pred.stride(), sigma_stride_b, sigma_stride_k, sigma_value, alpha, gamma, beta,
           keypoint_weight, background_weight, threshold, l1_weight,
           **_launch_args(pred, weights, sigma, encoding, kind, alpha, gamma, beta))
    return map_losses, positives


@torch.library.custom_op("kpfast_triton::heatmap_loss_backward", mutates_args=())
def heatmap_loss_backward(grad_map_losses: torch.Tensor, pred: torch.Tensor, keypoints: torch.Tensor,
                          weights: torch.Tensor | None, sigma: torch.Tensor | None, sigma_value: float, encoding: str,
                          kind: str, alpha: float, gamma: float, beta: float, keypoint_weight: float,
                          background_weight: float, threshold: float, l1_weight: float) -> torch.Tensor:
    batch, instances, num_keypoints = keypoints.shape[:3]
    grad = torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)
    if grad.numel() == 0:
        return grad
    # (B, K) with any strides: the usual expanded scalar (strides 0) is read in place, not copied.
    upstream = grad_map_losses.to(torch.float32)
    weights_arg, sigma_arg, sigma_stride_b, sigma_stride_k = _optional_arguments(keypoints, weights, sigma)
    launch(_loss_backward_kernel, (batch * num_keypoints,),
           upstream, pred, keypoints, weights_arg, sigma_arg, grad, instances, num_keypoints, pred.shape[2],
           pred.shape[3], *pred.stride(), sigma_stride_b, sigma_stride_k, *upstream.stride(), sigma_value, alpha,
           gamma, beta, keypoint_weight, background_weight, threshold, l1_weight,
           **_launch_args(pred, weights, sigma, encoding, kind, alpha, gamma, beta))
    return grad


@torch.library.custom_op("kpfast_triton::heatmap_loss_fused", mutates_args=())
def heatmap_loss_fused(pred: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None,
                       sigma: torch.Tensor | None, sigma_value: float, encoding: str, kind: str, alpha: float,
                       gamma: float, beta: float, keypoint_weight: float, background_weight: float, threshold: float,
                       l1_weight: float, expected_upstream: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """heatmap_loss plus the gradient w.r.t. pred for the upstream ``expected_upstream`` on every map
    (the gradient-in-forward opt-in; kpfast/ops/_loss_registration.py)."""
    if kind not in FUSED_GRADIENT_LOSS_KINDS:  # e.g. cornernet: its upstream depends on its own positive count
        raise ValueError(f"kind: expected one of {FUSED_GRADIENT_LOSS_KINDS} with the fused gradient, got {kind!r}")
    batch, instances, num_keypoints = keypoints.shape[:3]
    map_losses = torch.empty((batch, num_keypoints), dtype=torch.float32, device=pred.device)
    positives = torch.empty_like(map_losses)
    grad = torch.empty(pred.shape, dtype=pred.dtype, device=pred.device)
    if batch * num_keypoints == 0:
        return map_losses, positives, grad
    weights_arg, sigma_arg, sigma_stride_b, sigma_stride_k = _optional_arguments(keypoints, weights, sigma)
    launch(_loss_fused_forward_kernel, (batch * num_keypoints,),
           pred, keypoints, weights_arg, sigma_arg, map_losses, positives, grad, instances, num_keypoints,
           pred.shape[2], pred.shape[3], *pred.stride(), sigma_stride_b, sigma_stride_k, sigma_value,
           expected_upstream, alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight,
           **fused_launch_config(pred.shape[2], pred.shape[3], encoding, kind,
                                 fixed_exponents(kind, alpha, gamma, beta), weights is not None, sigma is not None,
                                 pred.element_size(), pred.stride()))
    return map_losses, positives, grad


def fused_launch_config(height: int, width: int, encoding: str, kind: str, fixed: bool = True,
                        has_weights: bool = True, has_sigma: bool = True, element_size: int = 4,
                        strides: tuple | None = None) -> dict:
    """The fused forward holds the loss and the gradient of a tile: the backward's tiles, halved."""
    config = launch_config(height, width, encoding, kind, fixed, has_weights, has_sigma, element_size, strides)
    max_elements, _ = TILE_BY_KIND[kind]
    config["BLOCK_H"], config["BLOCK_W"] = tile_shape(height, width, max_elements=max(max_elements // 2, 1))
    return config


@torch.library.custom_op("kpfast_triton::heatmap_loss_rescale_", mutates_args=("grad",))
def heatmap_loss_rescale_(grad: torch.Tensor, grad_map_losses: torch.Tensor, expected_upstream: float) -> None:
    """In place: grad[b, k] *= grad_map_losses[b, k] / expected_upstream, skipping the maps whose
    upstream equals it (decided on the device)."""
    batch, num_keypoints = grad.shape[:2]
    if grad.numel() == 0:
        return
    upstream = grad_map_losses.to(torch.float32)
    launch(_loss_rescale_kernel, (batch * num_keypoints,),
           grad, upstream, *upstream.stride(), num_keypoints, grad.shape[2] * grad.shape[3], expected_upstream,
           BLOCK=RESCALE_BLOCK)


@heatmap_loss_fused.register_fake
def _(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta, keypoint_weight,
      background_weight, threshold, l1_weight, expected_upstream):
    map_losses = pred.new_empty(pred.shape[:2], dtype=torch.float32)
    return map_losses, torch.empty_like(map_losses), pred.new_empty(pred.shape)


@heatmap_loss_rescale_.register_fake
def _(grad, grad_map_losses, expected_upstream):
    return None
