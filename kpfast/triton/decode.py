"""Triton kernels for Op 3, heatmap decoding, registered as torch custom ops (``kpfast_triton::``).

* decode: one program per map. The map is read once, in chunks, for the first maximum in
  row-major order. DARK/UDP then need the blurred map at a few pixels only: the 5x5 patch of
  blurred values (coordinates clamped into the map) around the argmax is computed separably
  from the ORIGINAL map (rows, then columns), never as a full blurred map. MMPose's rescaling
  by max(original) / max(blurred) cancels in the log-differences unless the floor (DARK) or the
  clip (UDP) can be reached; only then is the full blurred maximum computed (see
  csrc/kpfast/decode.h, which states the same rules for the C++ kernels).
* soft-argmax: one program per map, a single pass with an online (rescaled) softmax; the
  backward is one program per (map, chunk) and recomputes p from the saved log-normaliser.
* find_peaks: one program per map holding the whole map; the window test reads shifted tiles
  (cache hits), then the top P are selected by P max-reductions.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpfast.triton._common import device_guard

METHODS = {"argmax": 0, "quarter": 1, "dark": 2, "udp": 3, "local_mean": 4}
# Read inside @triton.jit, so they must be tl.constexpr instances: Triton's compiler rejects plain
# module globals and annotated ones (`x: tl.constexpr = 1`); only the interpreter accepts them.
DARK_FLOOR = tl.constexpr(1e-10)
UDP_LOW = tl.constexpr(1e-3)
UDP_HIGH = tl.constexpr(50.0)
FLOAT32_EPS = tl.constexpr(1.1920928955078125e-07)
SCALE_MARGIN = tl.constexpr(1e-4)


@triton.jit
def _finite(v):
    return (v - v) == 0.0


@triton.jit
def _small_tap(m, a0, a1, a2, a3, a4):
    """The small OpenCV table by distance m from the kernel's edge (entries past the centre unused)."""
    return tl.where(m == 0, a0, tl.where(m == 1, a1, tl.where(m == 2, a2, tl.where(m == 3, a3, a4))))


@triton.jit
def _raw_taps(j, KSIZE: tl.constexpr):
    """cv2.getGaussianKernel(KSIZE, 0) before normalisation, as float32, at integer index j (any shape).

    Computed in the kernel (no host-to-device copy of a tap table inside the op call): OpenCV's
    fixed tables for KSIZE <= 9 (exact binary fractions), else exp(-x^2 / (2 sigma^2)) in
    float64 with OpenCV's default sigma, cast to float32, as kpfast.reference.decode does."""
    m = tl.minimum(j, KSIZE - 1 - j)
    if KSIZE == 1:
        raw = tl.where(j == 0, 1.0, 0.0)
    elif KSIZE == 3:
        raw = _small_tap(m, 0.25, 0.5, 0.0, 0.0, 0.0)
    elif KSIZE == 5:
        raw = _small_tap(m, 0.0625, 0.25, 0.375, 0.0, 0.0)
    elif KSIZE == 7:
        raw = _small_tap(m, 0.03125, 0.109375, 0.21875, 0.28125, 0.0)
    elif KSIZE == 9:
        raw = _small_tap(m, 0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375)
    else:
        sigma = 0.3 * ((KSIZE - 1) * 0.5 - 1) + 0.8
        x = j.to(tl.float64) - (KSIZE - 1) * 0.5
        raw = tl.exp((-0.5 / (sigma * sigma)) * x * x).to(tl.float32)  # numpy's order of operations
    return tl.where((j >= 0) & (j < KSIZE), raw, 0.0)


@triton.jit
def _taps(j, KSIZE: tl.constexpr, KPAD: tl.constexpr):
    """The normalised float32 blur taps at index j (0 outside 0..KSIZE-1), as
    kpfast.reference.decode.opencv_gaussian_kernel: float32 taps over their float64 sum."""
    total = tl.sum(_raw_taps(tl.arange(0, KPAD), KSIZE).to(tl.float64), axis=0)
    return (_raw_taps(j, KSIZE).to(tl.float64) * (1.0 / total)).to(tl.float32)


@triton.jit
def _pick(patch, ii, cc, i: tl.constexpr, c: tl.constexpr):
    """patch[i, c] of a small 2-D tensor, as a scalar."""
    return tl.sum(tl.sum(tl.where((ii == i) & (cc == c), patch, 0.0), axis=1), axis=0)


@triton.jit
def _newton_step(dx, dy, dxx, dxy, dyy):
    det = dxx * dyy - dxy * dxy
    safe = tl.where(det != 0.0, det, 1.0)
    sx = -(dyy * dx - dxy * dy) / safe
    sy = -(dxx * dy - dxy * dx) / safe
    keep = (det != 0.0) & _finite(sx) & _finite(sy)
    return tl.where(keep, sx, 0.0), tl.where(keep, sy, 0.0)


@triton.jit
def _blurred_maximum(base, height, width, KSIZE: tl.constexpr, KPAD: tl.constexpr,
                     BLOCK_W: tl.constexpr):
    """max over the whole blurred map (zero padding): the rare fallback."""
    radius = KSIZE // 2
    cols = tl.arange(0, BLOCK_W)
    taps = tl.arange(0, KPAD)
    g_cols = _taps(taps, KSIZE, KPAD)
    best = float("-inf")
    for row in range(0, height):
        for col0 in range(0, width, BLOCK_W):
            out_cols = col0 + cols
            src_cols = out_cols[:, None] + taps[None, :] - radius
            acc = tl.zeros((BLOCK_W,), dtype=tl.float32)
            for d in range(0, KSIZE):
                src_row = row + d - radius
                g_row = tl.sum(tl.where(taps == d, g_cols, 0.0), axis=0)
                mask = ((taps[None, :] < KSIZE) & (src_cols >= 0) & (src_cols < width) & (src_row >= 0)
                        & (src_row < height))
                values = tl.load(base + src_row * width + src_cols, mask=mask, other=0.0).to(tl.float32)
                acc += g_row * tl.sum(values * g_cols[None, :], axis=1)
            acc = tl.where(out_cols < width, acc, float("-inf"))
            best = tl.maximum(best, tl.max(acc, axis=0))
    return best


@triton.jit
def _decode_kernel(maps_ptr, coords_ptr, scores_ptr, height, width, METHOD: tl.constexpr,
                   KSIZE: tl.constexpr, KPAD: tl.constexpr, ROWS_PAD: tl.constexpr, WINDOW: tl.constexpr,
                   WPAD: tl.constexpr, BLOCK: tl.constexpr, BLOCK_W: tl.constexpr):
    map_id = tl.program_id(0).to(tl.int64)
    size = height * width
    base = maps_ptr + map_id * size
    offsets = tl.arange(0, BLOCK)
    best = float("-inf")
    best_index = 0
    numbers = 0  # non-NaN pixels seen
    for start in range(0, size, BLOCK):
        index = start + offsets
        values = tl.load(base + index, mask=index < size, other=float("nan")).to(tl.float32)
        # NaN pixels are skipped (DESIGN.md), explicitly: tl.max's own NaN handling differs
        # between the interpreter (propagates) and GPUs (ignores).
        is_number = values == values
        values = tl.where(is_number, values, float("-inf"))
        numbers += tl.sum(is_number.to(tl.int32), axis=0)
        chunk_max = tl.max(values, axis=0)
        chunk_index = tl.min(tl.where(is_number & (values == chunk_max), index, size), axis=0)
        take = chunk_max > best  # strict: an earlier chunk keeps a tie
        best_index = tl.where(take, chunk_index, best_index)
        best = tl.where(take, chunk_max, best)
    best = tl.where(numbers > 0, best, float("nan"))  # an all-NaN map scores NaN (coords -1)
    x = best_index % width
    y = best_index // width
    ox = 0.0
    oy = 0.0
    positive = best > 0.0
    if METHOD == 1:  # quarter (HRNet get_final_preds)
        inside = (x > 1) & (x < width - 1) & (y > 1) & (y < height - 1)
        at = base + y * width + x
        right = tl.load(at + 1, mask=inside, other=0.0).to(tl.float32)
        left = tl.load(at - 1, mask=inside, other=0.0).to(tl.float32)
        down = tl.load(at + width, mask=inside, other=0.0).to(tl.float32)
        up = tl.load(at - width, mask=inside, other=0.0).to(tl.float32)
        sx = tl.where(right > left, 1.0, tl.where(right < left, -1.0, 0.0))
        sy = tl.where(down > up, 1.0, tl.where(down < up, -1.0, 0.0))
        ox = tl.where(inside, 0.25 * sx, 0.0)
        oy = tl.where(inside, 0.25 * sy, 0.0)
    if METHOD == 4:  # local_mean
        d = tl.arange(0, WPAD) - WINDOW // 2
        rows = y + d
        cols = x + d
        mask = ((d[:, None] <= WINDOW // 2) & (d[None, :] <= WINDOW // 2) & (rows[:, None] >= 0)
                & (rows[:, None] < height) & (cols[None, :] >= 0) & (cols[None, :] < width))
        w = tl.load(base + rows[:, None] * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        w = tl.maximum(w, 0.0)
        total = tl.sum(tl.sum(w, axis=1), axis=0)
        ox = tl.sum(tl.sum(w * d[None, :].to(tl.float32), axis=1), axis=0) / total
        oy = tl.sum(tl.sum(w * d[:, None].to(tl.float32), axis=1), axis=0) / total
    if METHOD == 2 or METHOD == 3:
        radius = KSIZE // 2
        # Horizontal pass: rows y-2-R .. y+2+R, five columns (clamped) around x.
        r = tl.arange(0, ROWS_PAD)
        c = tl.arange(0, 8)
        j = tl.arange(0, KPAD)
        src_row = y - 2 - radius + r
        col_c = tl.minimum(tl.maximum(x - 2 + c, 0), width - 1)
        src_col = col_c[None, :, None] + j[None, None, :] - radius
        g = _taps(j, KSIZE, KPAD)
        mask = ((r[:, None, None] < 5 + 2 * radius) & (src_row[:, None, None] >= 0)
                & (src_row[:, None, None] < height) & (c[None, :, None] < 5) & (j[None, None, :] < KSIZE)
                & (src_col >= 0) & (src_col < width))
        values = tl.load(base + src_row[:, None, None] * width + src_col, mask=mask, other=0.0).to(tl.float32)
        horizontal = tl.sum(values * g[None, None, :], axis=2)  # (ROWS_PAD, 8)
        # Vertical pass: patch row i sits at clamp(y - 2 + i); its taps start at horizontal row
        # clamp(y - 2 + i) - y + 2.
        i = tl.arange(0, 8)
        first = tl.minimum(tl.maximum(y - 2 + i, 0), height - 1) - y + 2
        tap = r[None, :] - first[:, None]
        vmask = (i[:, None] < 5) & (tap >= 0) & (tap < KSIZE)
        vweights = tl.where(vmask, _taps(tap, KSIZE, KPAD), 0.0)  # (8, ROWS_PAD)
        patch = tl.sum(vweights[:, :, None] * horizontal[None, :, :], axis=1)  # (8, 8): [i, c]
        ii = i[:, None]
        cc = c[None, :]
        di = ii - 2
        dc = cc - 2
        if METHOD == 2:
            refine = positive & (x > 1) & (x < width - 2) & (y > 1) & (y < height - 2)
            stencil = (((di == 0) & (dc >= -2) & (dc <= 2)) | ((dc == 0) & (di >= -2) & (di <= 2))
                       | ((di * di == 1) & (dc * dc == 1)))
            low = stencil & (patch < DARK_FLOOR * (1.0 + SCALE_MARGIN))
            need = refine & (tl.max(tl.max(low.to(tl.int32), axis=1), axis=0) > 0)
        else:
            refine = positive
            centre = _pick(patch, ii, cc, 2, 2)
            max_scale = best / tl.where(centre > 0.0, centre, 1.0) * (1.0 + SCALE_MARGIN)
            block = (di * di <= 1) & (dc * dc <= 1)
            bad = block & ((patch < UDP_LOW * (1.0 + SCALE_MARGIN)) | (patch * max_scale > UDP_HIGH))
            need = refine & ((centre <= 0.0) | (tl.max(tl.max(bad.to(tl.int32), axis=1), axis=0) > 0))
        scale = 1.0
        if need:
            scale = best / _blurred_maximum(base, height, width, KSIZE, KPAD, BLOCK_W)
        scaled = patch * scale
        if METHOD == 2:
            v = tl.log(tl.maximum(scaled, DARK_FLOOR))
            centre_v = _pick(v, ii, cc, 2, 2)
            dx = 0.5 * (_pick(v, ii, cc, 2, 3) - _pick(v, ii, cc, 2, 1))
            dy = 0.5 * (_pick(v, ii, cc, 3, 2) - _pick(v, ii, cc, 1, 2))
            dxx = 0.25 * (_pick(v, ii, cc, 2, 4) - 2.0 * centre_v + _pick(v, ii, cc, 2, 0))
            dxy = 0.25 * (_pick(v, ii, cc, 3, 3) - _pick(v, ii, cc, 1, 3) - _pick(v, ii, cc, 3, 1)
                          + _pick(v, ii, cc, 1, 1))
            dyy = 0.25 * (_pick(v, ii, cc, 4, 2) - 2.0 * centre_v + _pick(v, ii, cc, 0, 2))
        else:
            v = tl.log(tl.minimum(tl.maximum(scaled, UDP_LOW), UDP_HIGH))
            centre_v = _pick(v, ii, cc, 2, 2)
            right = _pick(v, ii, cc, 2, 3)
            left = _pick(v, ii, cc, 2, 1)
            down = _pick(v, ii, cc, 3, 2)
            up = _pick(v, ii, cc, 1, 2)
            dx = 0.5 * (right - left)
            dy = 0.5 * (down - up)
            dxx = right - 2.0 * centre_v + left + FLOAT32_EPS
            dyy = down - 2.0 * centre_v + up + FLOAT32_EPS
            dxy = 0.5 * (_pick(v, ii, cc, 3, 3) - right - down + centre_v + centre_v - left - up
                         + _pick(v, ii, cc, 1, 1))
        sx, sy = _newton_step(dx, dy, dxx, dxy, dyy)
        ox = tl.where(refine, sx, 0.0)
        oy = tl.where(refine, sy, 0.0)
    out_x = tl.where(positive, x.to(tl.float32) + ox, -1.0)
    out_y = tl.where(positive, y.to(tl.float32) + oy, -1.0)
    tl.store(coords_ptr + 2 * map_id, out_x)
    tl.store(coords_ptr + 2 * map_id + 1, out_y)
    tl.store(scores_ptr + map_id, best)


def decode_config(height: int, width: int, method: str, blur_kernel: int, window: int) -> dict:
    """The constexprs (and launch options) of the decode kernel for an H x W map."""
    radius = blur_kernel // 2
    return dict(METHOD=METHODS[method], KSIZE=blur_kernel, KPAD=triton.next_power_of_2(blur_kernel),
                ROWS_PAD=triton.next_power_of_2(5 + 2 * radius), WINDOW=window, WPAD=triton.next_power_of_2(window),
                BLOCK=min(2048, triton.next_power_of_2(max(height * width, 1))),
                # 8 warps: at 4 the DARK/UDP patch (16x8x16 values) spills 12 bytes per thread on sm_90.
                BLOCK_W=min(128, triton.next_power_of_2(max(width, 1))), num_warps=8)


@torch.library.custom_op("kpfast_triton::decode_heatmaps", mutates_args=())
def decode_heatmaps(heatmaps: torch.Tensor, method: str, blur_kernel: int, window: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    batch, num_keypoints, height, width = heatmaps.shape
    coords = torch.empty((batch, num_keypoints, 2), dtype=torch.float32, device=heatmaps.device)
    scores = torch.empty((batch, num_keypoints), dtype=torch.float32, device=heatmaps.device)
    if batch * num_keypoints == 0:
        return coords, scores
    with device_guard(heatmaps):
        _decode_kernel[(batch * num_keypoints,)](heatmaps, coords, scores, height, width,
                                                 **decode_config(height, width, method, blur_kernel, window))
    return coords, scores


# ---- soft-argmax --------------------------------------------------------------------------

@triton.jit
def _soft_argmax_kernel(maps_ptr, coords_ptr, scores_ptr, lse_ptr, width, size, beta, BLOCK: tl.constexpr):
    map_id = tl.program_id(0).to(tl.int64)
    base = maps_ptr + map_id * size
    offsets = tl.arange(0, BLOCK)
    running_max = float("-inf")
    total = 0.0
    sum_x = 0.0
    sum_y = 0.0
    nans = 0
    for start in range(0, size, BLOCK):
        index = start + offsets
        mask = index < size
        values = tl.load(base + index, mask=mask, other=float("-inf")).to(tl.float32)
        # The running maximum skips NaN explicitly (tl.max treats NaN differently on GPUs and in
        # the interpreter); a NaN pixel still makes the map's coords and score NaN below.
        is_nan = values != values
        nans += tl.sum(is_nan.to(tl.int32), axis=0)
        new_max = tl.maximum(running_max, tl.max(tl.where(is_nan, float("-inf"), values), axis=0))
        # -inf pixels weigh 0. While every pixel so far is -inf (new_max = -inf), exp(-inf - -inf)
        # would be NaN: nothing has been summed yet, so any finite rescale is right.
        rescale = tl.where(new_max == float("-inf"), 1.0, tl.exp(beta * (running_max - new_max)))
        e = tl.where(mask & (values != float("-inf")), tl.exp(beta * (values - new_max)), 0.0)
        total = total * rescale + tl.sum(e, axis=0)
        sum_x = sum_x * rescale + tl.sum(e * (index % width).to(tl.float32), axis=0)
        sum_y = sum_y * rescale + tl.sum(e * (index // width).to(tl.float32), axis=0)
        running_max = new_max
    running_max = tl.where(nans > 0, float("nan"), running_max)
    tl.store(coords_ptr + 2 * map_id, tl.where(nans > 0, float("nan"), sum_x / total))
    tl.store(coords_ptr + 2 * map_id + 1, tl.where(nans > 0, float("nan"), sum_y / total))
    tl.store(scores_ptr + map_id, running_max)
    tl.store(lse_ptr + map_id, beta * running_max + tl.log(total))


@triton.jit
def _soft_argmax_backward_kernel(grad_coords_ptr, maps_ptr, coords_ptr, lse_ptr, grad_ptr, width, size, beta,
                                 BLOCK: tl.constexpr):
    map_id = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    gx = tl.load(grad_coords_ptr + 2 * map_id)
    gy = tl.load(grad_coords_ptr + 2 * map_id + 1)
    x = tl.load(coords_ptr + 2 * map_id)
    y = tl.load(coords_ptr + 2 * map_id + 1)
    lse = tl.load(lse_ptr + map_id)
    index = chunk * BLOCK + tl.arange(0, BLOCK)
    mask = index < size
    values = tl.load(maps_ptr + map_id * size + index, mask=mask, other=0.0).to(tl.float32)
    p = tl.exp(beta * values - lse)
    cols = (index % width).to(tl.float32)
    rows = (index // width).to(tl.float32)
    grad = beta * p * (gx * (cols - x) + gy * (rows - y))
    tl.store(grad_ptr + map_id * size + index, grad.to(grad_ptr.dtype.element_ty), mask=mask)


def soft_argmax_config(size: int) -> dict:
    return dict(BLOCK=min(2048, triton.next_power_of_2(max(size, 1))), num_warps=4)


def soft_argmax_backward_config(size: int) -> dict:
    return dict(BLOCK=min(1024, triton.next_power_of_2(max(size, 1))), num_warps=4)


@torch.library.custom_op("kpfast_triton::soft_argmax", mutates_args=())
def soft_argmax(heatmaps: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, num_keypoints, height, width = heatmaps.shape
    options = dict(dtype=torch.float32, device=heatmaps.device)
    coords = torch.empty((batch, num_keypoints, 2), **options)
    scores = torch.empty((batch, num_keypoints), **options)
    lse = torch.empty((batch, num_keypoints), **options)
    if batch * num_keypoints == 0:
        return coords, scores, lse
    size = height * width
    with device_guard(heatmaps):
        _soft_argmax_kernel[(batch * num_keypoints,)](heatmaps, coords, scores, lse, width, size, beta,
                                                      **soft_argmax_config(size))
    return coords, scores, lse


@torch.library.custom_op("kpfast_triton::soft_argmax_backward", mutates_args=())
def soft_argmax_backward(grad_coords: torch.Tensor, heatmaps: torch.Tensor, coords: torch.Tensor,
                         log_normaliser: torch.Tensor, beta: float) -> torch.Tensor:
    batch, num_keypoints, height, width = heatmaps.shape
    grad = torch.empty_like(heatmaps)
    if batch * num_keypoints == 0:
        return grad
    size = height * width
    if size == 0:
        return grad
    config = soft_argmax_backward_config(size)
    with device_guard(heatmaps):
        _soft_argmax_backward_kernel[(batch * num_keypoints, triton.cdiv(size, config["BLOCK"]))](
            grad_coords.float().contiguous(), heatmaps, coords.float().contiguous(),
            log_normaliser.float().contiguous(), grad, width, size, beta, **config)
    return grad


# ---- peaks --------------------------------------------------------------------------------

@triton.jit
def _find_peaks_kernel(maps_ptr, coords_ptr, scores_ptr, valid_ptr, height, width, threshold, max_peaks,
                       DISTANCE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    map_id = tl.program_id(0).to(tl.int64)
    base = maps_ptr + map_id * height * width
    rows = tl.arange(0, BLOCK_H)[:, None]
    cols = tl.arange(0, BLOCK_W)[None, :]
    inside = (rows < height) & (cols < width)
    values = tl.load(base + rows * width + cols, mask=inside, other=float("-inf")).to(tl.float32)
    peak = inside & (values > threshold)
    for dy in tl.static_range(-DISTANCE, DISTANCE + 1):
        for dx in tl.static_range(-DISTANCE, DISTANCE + 1):
            if dy != 0 or dx != 0:
                r = rows + dy
                c = cols + dx
                ok = inside & (r >= 0) & (r < height) & (c >= 0) & (c < width)
                q = tl.load(base + r * width + c, mask=ok, other=float("-inf")).to(tl.float32)
                earlier = dy < 0 or (dy == 0 and dx < 0)
                if earlier:
                    peak = peak & (q < values)
                else:
                    peak = peak & (q <= values)
    flat = rows * width + cols
    candidates = tl.where(peak, values, float("-inf"))
    big = height * width
    for p in range(0, max_peaks):
        top = tl.max(tl.max(candidates, axis=1), axis=0)
        found = top > float("-inf")
        index = tl.min(tl.min(tl.where((candidates == top) & peak, flat, big), axis=1), axis=0)
        slot = map_id * max_peaks + p
        tl.store(valid_ptr + slot, found.to(tl.int8))
        tl.store(scores_ptr + slot, tl.where(found, top, 0.0))
        tl.store(coords_ptr + 2 * slot, tl.where(found, (index % width).to(tl.float32), -1.0))
        tl.store(coords_ptr + 2 * slot + 1, tl.where(found, (index // width).to(tl.float32), -1.0))
        taken = flat == index
        candidates = tl.where(taken, float("-inf"), candidates)
        peak = peak & (taken == 0)


def find_peaks_config(height: int, width: int, min_distance: int) -> dict:
    # min_distance beyond the map size suppresses exactly as the map size does.
    return dict(DISTANCE=min(min_distance, max(height, width)), BLOCK_H=triton.next_power_of_2(max(height, 1)),
                BLOCK_W=triton.next_power_of_2(max(width, 1)), num_warps=8)


@torch.library.custom_op("kpfast_triton::find_peaks", mutates_args=())
def find_peaks(heatmaps: torch.Tensor, threshold: float, min_distance: int, max_peaks: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, num_keypoints, height, width = heatmaps.shape
    device = heatmaps.device
    coords = torch.empty((batch, num_keypoints, max_peaks, 2), dtype=torch.float32, device=device)
    scores = torch.empty((batch, num_keypoints, max_peaks), dtype=torch.float32, device=device)
    valid = torch.empty((batch, num_keypoints, max_peaks), dtype=torch.bool, device=device)
    if batch * num_keypoints == 0:
        return coords, scores, valid
    # min_distance beyond the map size suppresses exactly as the map size does.
    with device_guard(heatmaps):
        _find_peaks_kernel[(batch * num_keypoints,)](
            heatmaps, coords, scores, valid.view(torch.int8), height, width, float(threshold), max_peaks,
            **find_peaks_config(height, width, min_distance))
    return coords, scores, valid
