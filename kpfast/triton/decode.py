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
* find_peaks: one program per map walking it in 1024-pixel tiles; min_distance is a runtime
  argument (one compiled kernel for every distance): the window test is a runtime loop over
  shifted loads of the tile (L1 hits), skipped for tiles (and tap rows) with no pixel left
  above the threshold; each tile's peaks are merged into a register list of the best 32 or
  256 (score desc, index asc), written out in order at the end.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kpfast.triton._common import launch
from kpfast.vocabulary import DECODE_METHOD_CODES, REFINED_DECODE_METHODS

# The codes of kpfast/vocabulary.py (the METHOD constexpr the kernel is compiled for).
METHODS = DECODE_METHOD_CODES
QUARTER = tl.constexpr(DECODE_METHOD_CODES["quarter"])
DARK = tl.constexpr(DECODE_METHOD_CODES["dark"])
UDP = tl.constexpr(DECODE_METHOD_CODES["udp"])
LOCAL_MEAN = tl.constexpr(DECODE_METHOD_CODES["local_mean"])
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
                # The source row as a tile (not a scalar): a mask built from a scalar comparison
                # (a Python bool where the loop index is a Python int, as in the interpreter) is
                # not a boolean tile, which Triton 3.9's interpreter rejects in tl.load.
                src_rows = src_cols * 0 + (row + d - radius)
                g_row = tl.sum(tl.where(taps == d, g_cols, 0.0), axis=0)
                mask = ((taps[None, :] < KSIZE) & (src_cols >= 0) & (src_cols < width) & (src_rows >= 0)
                        & (src_rows < height))
                values = tl.load(base + src_rows * width + src_cols, mask=mask, other=0.0).to(tl.float32)
                acc += g_row * tl.sum(values * g_cols[None, :], axis=1)
            acc = tl.where(out_cols < width, acc, float("-inf"))
            best = tl.maximum(best, tl.max(acc, axis=0))
    return best


@triton.jit
def _decode_kernel(maps_ptr, coords_ptr, scores_ptr, height, width, METHOD: tl.constexpr, CLIP: tl.constexpr,
                   KSIZE: tl.constexpr, KPAD: tl.constexpr, ROWS: tl.constexpr, WINDOW: tl.constexpr,
                   WROWS: tl.constexpr, WCOLS: tl.constexpr, BLOCK: tl.constexpr, BLOCK_W: tl.constexpr):
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
        # NaN pixels are skipped (docs/design.md), explicitly: tl.max's own NaN handling differs
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
    if METHOD == QUARTER:  # HRNet get_final_preds
        inside = (x > 1) & (x < width - 1) & (y > 1) & (y < height - 1)
        at = base + y * width + x
        right = tl.load(at + 1, mask=inside, other=0.0).to(tl.float32)
        left = tl.load(at - 1, mask=inside, other=0.0).to(tl.float32)
        down = tl.load(at + width, mask=inside, other=0.0).to(tl.float32)
        up = tl.load(at - width, mask=inside, other=0.0).to(tl.float32)
        # docs/design.md: a non-finite value among the five leaves the integer argmax (as decode.h)
        keep = inside & _finite(best) & _finite(right) & _finite(left) & _finite(down) & _finite(up)
        sx = tl.where(right > left, 1.0, tl.where(right < left, -1.0, 0.0))
        sy = tl.where(down > up, 1.0, tl.where(down < up, -1.0, 0.0))
        ox = tl.where(keep, 0.25 * sx, 0.0)
        oy = tl.where(keep, 0.25 * sy, 0.0)
    if METHOD == LOCAL_MEAN:
        # The window in (WROWS, WCOLS) tiles (decode_config: at most WINDOW_TILE pixels each): a
        # window may be as wide as 2 max(H, W) - 1, far past one tile's register budget and
        # Triton's limit on a tensor's elements.
        half = WINDOW // 2
        bad = 0.0
        total = 0.0
        sum_x = 0.0
        sum_y = 0.0
        for r0 in range(0, WINDOW, WROWS):
            dr = r0 + tl.arange(0, WROWS) - half
            rows = y + dr
            row_ok = (dr <= half) & (rows >= 0) & (rows < height)
            for c0 in range(0, WINDOW, WCOLS):
                dc = c0 + tl.arange(0, WCOLS) - half
                cols = x + dc
                mask = row_ok[:, None] & ((dc <= half) & (cols >= 0) & (cols < width))[None, :]
                v = tl.load(base + rows[:, None] * width + cols[None, :], mask=mask, other=0.0).to(tl.float32)
                # docs/design.md: a non-finite value in the window leaves the integer argmax (as decode.h)
                bad += tl.sum(tl.sum(tl.where(_finite(v), 0.0, 1.0), axis=1), axis=0)
                w = tl.where(_finite(v) & (v > 0.0), v, 0.0)
                total += tl.sum(tl.sum(w, axis=1), axis=0)
                sum_x += tl.sum(tl.sum(w * dc[None, :].to(tl.float32), axis=1), axis=0)
                sum_y += tl.sum(tl.sum(w * dr[:, None].to(tl.float32), axis=1), axis=0)
        ox = tl.where(bad == 0.0, sum_x / total, 0.0)
        oy = tl.where(bad == 0.0, sum_y / total, 0.0)
    if METHOD == DARK or METHOD == UDP:
        radius = KSIZE // 2
        # The 5x5 patch around the argmax, separably: horizontal pass over rows y-2-R .. y+2+R,
        # five columns (clamped) around x, then the vertical pass. The 5 + 2R source rows are taken
        # ROWS at a time, each chunk's vertical contribution added to the patch, so that at most a
        # (ROWS, 8, KPAD) tile of map values is live (decode_config sizes it; the whole window at
        # blur 29-31 took 228 registers, or spilled). One chunk (blur <= 11) adds its sum to
        # zero: the same result as the single pass.
        c = tl.arange(0, 8)
        j = tl.arange(0, KPAD)
        i = tl.arange(0, 8)
        col_c = tl.minimum(tl.maximum(x - 2 + c, 0), width - 1)
        src_col = col_c[None, :, None] + j[None, None, :] - radius
        col_mask = (c[None, :, None] < 5) & (j[None, None, :] < KSIZE) & (src_col >= 0) & (src_col < width)
        g = _taps(j, KSIZE, KPAD)
        # Patch row i sits at clamp(y - 2 + i); its taps start at window row clamp(y - 2 + i) - y + 2.
        first = tl.minimum(tl.maximum(y - 2 + i, 0), height - 1) - y + 2
        patch = tl.zeros((8, 8), dtype=tl.float32)  # [i, c]
        for r0 in range(0, 5 + 2 * radius, ROWS):
            r = r0 + tl.arange(0, ROWS)
            src_row = y - 2 - radius + r
            row_ok = (r < 5 + 2 * radius) & (src_row >= 0) & (src_row < height)
            mask = row_ok[:, None, None] & col_mask
            values = tl.load(base + src_row[:, None, None] * width + src_col, mask=mask,
                             other=0.0).to(tl.float32)
            horizontal = tl.sum(values * g[None, None, :], axis=2)  # (ROWS, 8)
            tap = r[None, :] - first[:, None]
            vmask = (i[:, None] < 5) & (tap >= 0) & (tap < KSIZE)
            vweights = tl.where(vmask, _taps(tap, KSIZE, KPAD), 0.0)  # (8, ROWS)
            patch += tl.sum(vweights[:, :, None] * horizontal[None, :, :], axis=1)
        ii = i[:, None]
        cc = c[None, :]
        di = ii - 2
        dc = cc - 2
        if METHOD == DARK:
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
        if METHOD == DARK:
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
    px = x.to(tl.float32) + ox
    py = y.to(tl.float32) + oy
    if CLIP:  # a refined method (decode_config)
        # kpfast.reference.decode.clip_to_map: a near-singular Hessian makes the Newton step
        # arbitrarily long; the point is clipped to the map's area [-0.5, W-0.5] x [-0.5, H-0.5].
        # tl.cast, not .to(): a side of 1 reaches the kernel as the constant 1, a Python int.
        px = tl.minimum(tl.maximum(px, -0.5), tl.cast(width, tl.float32) - 0.5)
        py = tl.minimum(tl.maximum(py, -0.5), tl.cast(height, tl.float32) - 0.5)
    out_x = tl.where(positive, px, -1.0)
    out_y = tl.where(positive, py, -1.0)
    tl.store(coords_ptr + 2 * map_id, out_x)
    tl.store(coords_ptr + 2 * map_id + 1, out_y)
    tl.store(scores_ptr + map_id, best)


# A register ceiling (PTX .maxnreg) for ptxas, at the kernel's budget (benchmarks/resources.py): left to
# itself, ptxas chose 48-80 registers for the DARK/UDP kernels and spilled 12-40 bytes around the
# patch's f64 tap and cross-warp reductions (blur 9-15, sm_80 and sm_90); with the ceiling it takes
# what it needs under it, unspilled. Launch option only: the interpreter ignores it.
DECODE_MAX_REGISTERS = 168
# Map values of the DARK/UDP patch's horizontal pass live at once: (ROWS, 8, KPAD) per chunk
# of source rows. 2048 (8 per thread at 8 warps) is the whole window up to blur 11 (the default);
# 4096 left blur 29-31 at 139-142 registers (128x96), 2048 at 103-108 (sm_80 / sm_90).
PATCH_TILE = 2048


# local_mean's window tile, in pixels: the default window (3) is one 4x4 tile; a whole-map window
# (up to 2 * 32768 - 1 wide, kpfast.ops._checks.whole_map_window) is walked in tiles of this size.
WINDOW_TILE = 1024


def window_tile(window: int) -> dict:
    """WROWS x WCOLS, powers of two covering at most WINDOW_TILE pixels (the whole window when it fits)."""
    cols = min(triton.next_power_of_2(window), WINDOW_TILE)
    return dict(WROWS=min(triton.next_power_of_2(window), WINDOW_TILE // cols), WCOLS=cols)


def decode_config(height: int, width: int, method: str, blur_kernel: int, window: int) -> dict:
    """The constexprs (and launch options) of the decode kernel for an H x W map."""
    radius = blur_kernel // 2
    kpad = triton.next_power_of_2(blur_kernel)
    # CLIP: vocabulary.REFINED_DECODE_METHODS, whose unbounded offsets are clipped to the map (a
    # constexpr read here, so that a new refined method needs no edit of the kernel's clip).
    return dict(METHOD=METHODS[method], CLIP=method in REFINED_DECODE_METHODS, KSIZE=blur_kernel, KPAD=kpad,
                ROWS=min(triton.next_power_of_2(5 + 2 * radius), PATCH_TILE // (8 * kpad)),
                WINDOW=window, **window_tile(window),
                BLOCK=min(2048, triton.next_power_of_2(max(height * width, 1))),
                # 8 warps: at 4 the DARK/UDP patch (16x8x16 values) spills 12 bytes per thread on sm_90.
                # BLOCK_W 64: the rare whole-map blur (a (BLOCK_W, KPAD) tile per tap row) at 128 made
                # the 96x72 DARK kernel spill 16 bytes on sm_90; and 64 on narrow maps too: a 16-wide
                # tile (17x13) took 143-168 registers on sm_90 at blur 17-25, 64 wide 108-122.
                BLOCK_W=64, num_warps=8, maxnreg=DECODE_MAX_REGISTERS)


@torch.library.custom_op("kpfast_triton::decode_heatmaps", mutates_args=())
def decode_heatmaps(heatmaps: torch.Tensor, method: str, blur_kernel: int, window: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    batch, num_keypoints, height, width = heatmaps.shape
    coords = torch.empty((batch, num_keypoints, 2), dtype=torch.float32, device=heatmaps.device)
    scores = torch.empty((batch, num_keypoints), dtype=torch.float32, device=heatmaps.device)
    if batch * num_keypoints == 0:
        return coords, scores
    launch(_decode_kernel, (batch * num_keypoints,), heatmaps, coords, scores, height, width,
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
    # docs/design.md: a NaN or +inf pixel makes the map's coords and score NaN (as the reference and C++).
    running_max = tl.where((nans > 0) | (running_max == float("inf")), float("nan"), running_max)
    tl.store(coords_ptr + 2 * map_id, tl.where(nans > 0, float("nan"), sum_x / total))
    tl.store(coords_ptr + 2 * map_id + 1, tl.where(nans > 0, float("nan"), sum_y / total))
    tl.store(scores_ptr + map_id, running_max)
    tl.store(lse_ptr + map_id, beta * running_max + tl.log(total))


@triton.jit
def _soft_argmax_backward_kernel(grad_coords_ptr, maps_ptr, coords_ptr, lse_ptr, grad_ptr, K, grad_stride_b,
                                 grad_stride_k, grad_stride_xy, width, size, chunks, beta, BLOCK: tl.constexpr):
    # One program per (map, chunk of BLOCK pixels), flattened on grid axis 0: a second axis for the
    # chunks would pass CUDA's 65535 limit on large maps (soft_argmax_backward_grid).
    # grad_coords is read with its strides: the expanded upstream of coords.sum() is not copied.
    program = tl.program_id(0)
    pid = program // chunks  # the map; 32-bit divisions, once per program
    chunk = program - pid * chunks
    b = pid // K
    upstream = grad_coords_ptr + b.to(tl.int64) * grad_stride_b + (pid - b * K).to(tl.int64) * grad_stride_k
    map_id = pid.to(tl.int64)
    gx = tl.load(upstream)
    gy = tl.load(upstream + grad_stride_xy)
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


def soft_argmax_backward_grid(maps: int, size: int, block: int) -> tuple[tuple[int], int]:
    """(grid, chunks): one program per (map, chunk of ``block`` pixels), all on axis 0, whose limit
    (2**31 - 1) holds for every output kpfast accepts (at most 2**31 - 1 elements, block >= 1)."""
    chunks = triton.cdiv(size, block)
    return (maps * chunks,), chunks


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
    launch(_soft_argmax_kernel, (batch * num_keypoints,), heatmaps, coords, scores, lse, width, size, beta,
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
    grid, chunks = soft_argmax_backward_grid(batch * num_keypoints, size, config["BLOCK"])
    upstream = grad_coords.float()  # a no-op for float32: any strides are read in place
    launch(_soft_argmax_backward_kernel, grid,
           upstream, heatmaps, coords.float().contiguous(), log_normaliser.float().contiguous(), grad, num_keypoints,
           *upstream.stride(), width, size, chunks, beta, **config)
    return grad


# ---- peaks --------------------------------------------------------------------------------

@triton.jit
def _window_test(alive, v, base, index, rows, cols, height, width, dy_sign, dy_count, dx0, dx1,
                 STRICT: tl.constexpr):
    """alive & (no map pixel at (row + dy, col + dx), dy = dy_sign * 1..dy_count, dx = dx0..dx1,
    is >= v (STRICT: it comes earlier in row-major order) or > v (it comes later)).

    Pixels outside the map pass (the window is clipped to the map), and so do NaN pixels (skipped,
    docs/design.md: `NaN >= v` is false), as in the reference and the C++ kernels. Only
    alive pixels load (the others cannot come back), and a row of taps no pixel of the tile still
    needs is skipped: on heatmaps most tiles have no pixel above the threshold at all."""
    for k in range(1, dy_count + 1):
        dy = dy_sign * k
        r = rows + dy
        row_alive = alive & (r >= 0) & (r < height)
        if tl.max(row_alive.to(tl.int32), axis=0) > 0:
            row_index = index + dy * width
            for dx in range(dx0, dx1 + 1):
                # 0 <= c < width in one unsigned compare (a negative c wraps past width); tl.cast,
                # not .to(): a width of 1 reaches the kernel as the constant 1, a Python int.
                c = (cols + dx).to(tl.uint32, bitcast=True)
                ok = row_alive & (c < tl.cast(width, tl.uint32, bitcast=True))
                q = tl.load(base + (row_index + dx), mask=ok, other=float("-inf")).to(tl.float32)
                if STRICT:
                    alive = alive & ~(q >= v)
                else:
                    alive = alive & ~(q > v)
    return alive


@triton.jit(do_not_specialize=["min_distance", "max_peaks"])
def _find_peaks_kernel(maps_ptr, coords_ptr, scores_ptr, valid_ptr, height, width, min_distance, threshold,
                       max_peaks, BLOCK: tl.constexpr, LIST: tl.constexpr, FILL: tl.constexpr):
    """One program per map, walking it in flat tiles of BLOCK pixels.

    Per tile: the window test as runtime loops over shifted loads of the tile (L1 hits; d is a
    runtime argument, so one compiled kernel serves every min_distance), then the tile's peaks
    are merged into a list of the best LIST (score desc, index asc) kept in registers: while a
    tile peak beats the list's worst entry, the tile's best replaces it. The list is then written
    out in order. More than LIST peaks wanted: further rounds rescan the map for the next LIST
    after the last key written (rare: LIST is max_peaks rounded up to a bucket, at most 256)."""
    map_id = tl.program_id(0).to(tl.int64)
    size = height * width
    base = maps_ptr + map_id * size
    out = map_id * max_peaks
    offsets = tl.arange(0, BLOCK)
    slot = tl.arange(0, LIST)
    big = size  # an index past every pixel: the index of empty list slots
    done = 0
    last_score = float("inf")  # the key (score, index) the previous round ended on
    last_index = -1
    more = max_peaks > 0
    while more:
        cap = tl.minimum(max_peaks - done, LIST)
        in_list = slot < cap
        list_score = tl.full((LIST,), float("-inf"), tl.float32)
        list_index = tl.full((LIST,), 0, tl.int32) + big
        worst_score = float("-inf")
        worst_index = big
        for start in range(0, size, BLOCK):
            index = start + offsets
            inside = index < size
            v = tl.load(base + index, mask=inside, other=float("-inf")).to(tl.float32)
            # (NaN > threshold is false: NaN pixels are never peaks)
            alive = inside & (v > threshold) & ((v < last_score) | ((v == last_score) & (index > last_index)))
            if tl.max(alive.to(tl.int32), axis=0) > 0:
                rows = index // width
                cols = index - rows * width
                # Earlier in row-major order: the row's left part and the rows above (strict);
                # later: the right part and the rows below. Nearest taps first.
                alive = _window_test(alive, v, base, index, rows, cols, height, width, 0, 1, -min_distance, -1,
                                     True)
                alive = _window_test(alive, v, base, index, rows, cols, height, width, 0, 1, 1, min_distance,
                                     False)
                alive = _window_test(alive, v, base, index, rows, cols, height, width, -1, min_distance,
                                     -min_distance, min_distance, True)
                alive = _window_test(alive, v, base, index, rows, cols, height, width, 1, min_distance,
                                     -min_distance, min_distance, False)
                better = alive & ((v > worst_score) | ((v == worst_score) & (index < worst_index)))
                pending = tl.max(better.to(tl.int32), axis=0)
                while pending > 0:
                    best = tl.max(tl.where(better, v, float("-inf")), axis=0)
                    best_index = tl.min(tl.where(better & (v == best), index, big), axis=0)
                    target = tl.min(tl.where(in_list & (list_score == worst_score) & (list_index == worst_index),
                                             slot, LIST), axis=0)
                    list_score = tl.where(slot == target, best, list_score)
                    list_index = tl.where(slot == target, best_index, list_index)
                    worst_score = tl.min(tl.where(in_list, list_score, float("inf")), axis=0)
                    worst_index = tl.max(tl.where(in_list & (list_score == worst_score), list_index, -1), axis=0)
                    better = (better & (index != best_index)
                              & ((v > worst_score) | ((v == worst_score) & (index < worst_index))))
                    pending = tl.max(better.to(tl.int32), axis=0)
        # Write the list in order. Every filled slot holds a peak (score > -inf: v > threshold).
        found = tl.sum((list_score > float("-inf")).to(tl.int32), axis=0)
        for p in range(0, found):
            best = tl.max(list_score, axis=0)
            best_index = tl.min(tl.where(list_score == best, list_index, big), axis=0)
            at = out + done + p
            tl.store(valid_ptr + at, 1)
            tl.store(scores_ptr + at, best)
            tl.store(coords_ptr + 2 * at, (best_index % width).to(tl.float32))
            tl.store(coords_ptr + 2 * at + 1, (best_index // width).to(tl.float32))
            list_score = tl.where(list_index == best_index, float("-inf"), list_score)
            last_score = best
            last_index = best_index
        done += found
        more = (found == cap) & (done < max_peaks)
    # Unused slots: invalid, score 0, coords -1.
    for start in range(done, max_peaks, FILL):
        p = start + tl.arange(0, FILL)
        mask = p < max_peaks
        tl.store(valid_ptr + out + p, tl.zeros((FILL,), tl.int8), mask=mask)
        tl.store(scores_ptr + out + p, tl.zeros((FILL,), tl.float32), mask=mask)
        tl.store(coords_ptr + 2 * (out + p), tl.full((FILL,), -1.0, tl.float32), mask=mask)
        tl.store(coords_ptr + 2 * (out + p) + 1, tl.full((FILL,), -1.0, tl.float32), mask=mask)


# The selection list's sizes: max_peaks (or the map size, if smaller) rounded up to one of these,
# so that two compiled kernels serve every max_peaks. A 1024 list took 153 registers on sm_80;
# beyond 256 peaks the kernel makes one more pass over the map per 256 (see the kernel).
PEAK_LISTS = (32, 256)


def find_peaks_config(height: int, width: int, max_peaks: int) -> dict:
    """The constexprs (and launch options) of the find_peaks kernel: independent of min_distance,
    which is a runtime argument (one compiled kernel for every distance)."""
    wanted = max(1, min(max_peaks, height * width))
    return dict(BLOCK=min(1024, triton.next_power_of_2(max(height * width, 1))),
                LIST=next((n for n in PEAK_LISTS if wanted <= n), PEAK_LISTS[-1]), FILL=128, num_warps=4,
                maxnreg=FIND_PEAKS_MAX_REGISTERS)


# The register ceiling of find_peaks, at its budget (benchmarks/resources.py), for the same reason
# as DECODE_MAX_REGISTERS: without it ptxas took 56-80 registers and spilled 20-52 bytes (64x48
# fp32 on sm_80, 96x72 bf16 on sm_90, once the AOT compile specialised the integers as the launcher
# does); under it, 77-121 registers, unspilled.
FIND_PEAKS_MAX_REGISTERS = 128


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
    # min_distance beyond the map size suppresses exactly as the map size does (bounded loops).
    distance = min(min_distance, max(height, width))
    launch(_find_peaks_kernel, (batch * num_keypoints,),
           heatmaps, coords, scores, valid.view(torch.int8), height, width, distance, float(threshold), max_peaks,
           **find_peaks_config(height, width, max_peaks))
    return coords, scores, valid
