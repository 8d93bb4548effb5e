"""Reference heatmap decoding (docs/design.md, Op 3), in plain PyTorch.

Each function takes the normalised inputs the public ops in kpfast/ops/decode.py prepare
(heatmaps ``(B, K, H, W)`` contiguous, float32/float16/bfloat16) and states the published
algorithm over whole batches: the full blurred map is computed here, exactly as MMPose / DARK
do, so that the kernels (which blur only the few pixels the refinement reads) are tested
against the literal algorithm; the blur runs in chunks of maps so that its memory is bounded
(:data:`BLUR_CHUNK_BYTES`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from kpfast.vocabulary import REFINED_DECODE_METHODS

# cv2.getGaussianKernel(n, sigma <= 0) uses these fixed tables for n <= 9 (OpenCV's
# small_gaussian_tab; the 9-tap one is in OpenCV >= 4.x's table, checked against the installed
# cv2 by the tests) and the formula sigma = 0.3 ((n - 1) / 2 - 1) + 0.8 beyond.
_OPENCV_SMALL_GAUSSIAN = {
    1: (1.0,),
    3: (0.25, 0.5, 0.25),
    5: (0.0625, 0.25, 0.375, 0.25, 0.0625),
    7: (0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125),
    9: (0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375, 0.19921875, 0.1171875, 0.05078125, 0.015625),
}
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # MMPose's UDP regulariser of the Hessian


def opencv_sigma(kernel_size: int) -> float:
    """OpenCV's default Gaussian sigma for a kernel size (``cv2.GaussianBlur(..., sigmaX=0)``)."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def opencv_gaussian_kernel(kernel_size: int) -> np.ndarray:
    """The float32 1-D kernel ``cv2.getGaussianKernel(kernel_size, 0, cv2.CV_32F)`` returns.

    Reproduced step by step (double-precision taps, cast to float32, normalised by their double
    sum, cast again) so that the compiled kernels, which compute the same table in C++
    (csrc/kpfast/decode.h), blur with bit-identical weights."""
    if kernel_size in _OPENCV_SMALL_GAUSSIAN:
        taps = np.array(_OPENCV_SMALL_GAUSSIAN[kernel_size], dtype=np.float64)
    else:
        sigma = opencv_sigma(kernel_size)
        x = np.arange(kernel_size, dtype=np.float64) - (kernel_size - 1) * 0.5
        taps = np.exp(-0.5 / (sigma * sigma) * x * x)
    taps32 = taps.astype(np.float32)
    total = float(np.sum(taps32.astype(np.float64)))
    return (taps32.astype(np.float64) * (1.0 / total)).astype(np.float32)


_TAPS_ON_DEVICE: dict[tuple[int, torch.device], torch.Tensor] = {}


def _device_taps(kernel_size: int, device: torch.device) -> torch.Tensor:
    """The blur taps on ``device``, copied there once (a host-to-device copy inside every call
    would break CUDA-graph capture of the reference)."""
    key = (kernel_size, device)
    if key not in _TAPS_ON_DEVICE:
        _TAPS_ON_DEVICE[key] = torch.from_numpy(opencv_gaussian_kernel(kernel_size)).to(device)
    return _TAPS_ON_DEVICE[key]


# The 2-D convolution of the blur may unfold each map into H*W*k*k values (im2col on the CPU):
# maps are blurred in chunks whose unfolded size stays under this many bytes, so that the
# reference, which is also the fallback when the extension does not load, never needs more
# memory than that however many maps it decodes (each map is blurred on its own, so chunking
# does not change any value).
BLUR_CHUNK_BYTES = 256 * 2**20


def blur_chunk_size(height: int, width: int, kernel_size: int, element_size: int) -> int:
    """How many maps one convolution call blurs (at least 1)."""
    per_map = max(1, height * width * kernel_size * kernel_size * element_size)
    return max(1, BLUR_CHUNK_BYTES // per_map)


def blur_heatmaps(maps: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """MMPose's ``gaussian_blur``: zero padding, OpenCV's default-sigma Gaussian, then each map
    rescaled so that its maximum equals the original map's maximum. maps: (N, H, W) float32."""
    taps = _device_taps(kernel_size, maps.device).to(maps.dtype)
    kernel = torch.outer(taps, taps)[None, None]
    chunk = blur_chunk_size(maps.shape[-2], maps.shape[-1], kernel_size, maps.element_size())
    if maps.shape[0] <= chunk:
        blurred = F.conv2d(maps[:, None], kernel, padding=kernel_size // 2)[:, 0]
    else:
        blurred = torch.cat([F.conv2d(part[:, None], kernel, padding=kernel_size // 2)[:, 0]
                             for part in maps.split(chunk)])
    # Both maxima skip NaN, as the argmax does (docs/design.md, "Non-finite pixels"): a NaN pixel
    # away from the peak must not turn the rescaling factor, and so the whole step, into NaN.
    original_max = _nan_skipping_max(maps)
    return blurred * (original_max / _nan_skipping_max(blurred))


def _nan_skipping_max(maps: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1) maximum of each (N, H, W) map over its non-NaN values (NaN when it has none)."""
    numbers = torch.where(torch.isnan(maps), -math.inf, maps).amax(dim=(1, 2), keepdim=True)
    return torch.where(torch.isnan(maps).all(dim=2, keepdim=True).all(dim=1, keepdim=True), math.nan, numbers)


def heatmap_maximum(maps: torch.Tensor):
    """(x, y, score, index) of the first maximum in row-major order of each (N, H, W) map.

    NaN pixels are skipped (docs/design.md; torch.argmax would take the first NaN as the maximum);
    +inf / -inf are ordinary values; a map of NaN only has score NaN (and index 0)."""
    width = maps.shape[-1]
    flat = maps.reshape(maps.shape[0], -1)
    nan = torch.isnan(flat)
    numbers = torch.where(nan, -math.inf, flat)
    index = numbers.argmax(dim=1)  # documented: the first maximal value on ties
    score = numbers.gather(1, index[:, None])[:, 0]
    score = torch.where(nan.all(dim=1), math.nan, score) if flat.shape[1] else score
    return (index % width), (index // width), score, index


def _sampler(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor):
    """at(dy, dx): maps[n, y + dy, x + dx] with the coordinates clamped into the map (callers
    mask the results where clamping would change the published algorithm)."""
    height, width = maps.shape[-2:]
    flat = maps.reshape(maps.shape[0], -1)

    def at(dy: int, dx: int) -> torch.Tensor:
        yy = (y + dy).clamp(0, height - 1)
        xx = (x + dx).clamp(0, width - 1)
        return flat.gather(1, (yy * width + xx)[:, None])[:, 0]

    return at


def _quarter_offset(maps, x, y):
    """HRNet ``get_final_preds``: when 1 < px < W-1 and 1 < py < H-1 (both), move 0.25 px along
    sign(h[y, x+1] - h[y, x-1]) and sign(h[y+1, x] - h[y-1, x])."""
    height, width = maps.shape[-2:]
    at = _sampler(maps, x, y)
    inside = (x > 1) & (x < width - 1) & (y > 1) & (y < height - 1)
    taps = [at(0, 0), at(0, 1), at(0, -1), at(1, 0), at(-1, 0)]
    # docs/design.md: a non-finite value among them leaves the integer argmax
    keep = inside & torch.stack([torch.isfinite(t) for t in taps]).all(dim=0)
    ox = 0.25 * torch.sign(taps[1] - taps[2])
    oy = 0.25 * torch.sign(taps[3] - taps[4])
    return torch.where(keep, ox, 0.0), torch.where(keep, oy, 0.0)


def _dark_offset(maps, x, y, blur_kernel):
    """DARK (``taylor`` / MMPose ``refine_keypoints_dark``): blur, floor at 1e-10, log; refine
    only when 1 < x < W-2 and 1 < y < H-2; skip a singular Hessian (det == 0)."""
    height, width = maps.shape[-2:]
    # float64 from the blur on: the Newton step divides by det(H), which is near 0 on flat or noisy
    # maps, and float32 rounding of the 2-D convolution's long sums (961 products at blur 31) was
    # amplified by |H^-1| into offsets 1e-1 px away from the exact algorithm. In float64 the
    # reference is the exact algorithm; the float32 kernels are measured against it.
    log_maps = torch.log(blur_heatmaps(maps.double(), blur_kernel).clamp_min(1e-10))
    at = _sampler(log_maps, x, y)
    centre = at(0, 0)
    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * centre + at(0, -2))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    dyy = 0.25 * (at(2, 0) - 2 * centre + at(-2, 0))
    det = dxx * dyy - dxy * dxy
    inside = (x > 1) & (x < width - 2) & (y > 1) & (y < height - 2)
    return _newton_step(dx, dy, dxx, dxy, dyy, det, inside)


def _udp_offset(maps, x, y, blur_kernel):
    """UDP (MMPose ``refine_keypoints_dark_udp``): blur, clip to [1e-3, 50], log, edge padding
    (clamped coordinates), its 3x3 derivative formulas and the Hessian regularised by eps * I."""
    log_maps = torch.log(blur_heatmaps(maps.double(), blur_kernel).clamp(1e-3, 50.0))  # float64: see _dark_offset
    at = _sampler(log_maps, x, y)
    centre, right, left, down, up = at(0, 0), at(0, 1), at(0, -1), at(1, 0), at(-1, 0)
    dx = 0.5 * (right - left)
    dy = 0.5 * (down - up)
    dxx = right - 2 * centre + left
    dyy = down - 2 * centre + up
    dxy = 0.5 * (at(1, 1) - right - down + centre + centre - left - up + at(-1, -1))
    dxx, dyy = dxx + FLOAT32_EPS, dyy + FLOAT32_EPS
    det = dxx * dyy - dxy * dxy
    return _newton_step(dx, dy, dxx, dxy, dyy, det, torch.ones_like(det, dtype=torch.bool))


def _newton_step(dx, dy, dxx, dxy, dyy, det, refine):
    """offset = -H^-1 grad, zero where not refined, where det == 0 (a singular Hessian, which
    numpy's inverse would reject) or where the step is not finite."""
    safe_det = torch.where(det != 0, det, torch.ones_like(det))
    ox = -(dyy * dx - dxy * dy) / safe_det
    oy = -(dxx * dy - dxy * dx) / safe_det
    keep = refine & (det != 0) & torch.isfinite(ox) & torch.isfinite(oy)
    return torch.where(keep, ox, 0.0), torch.where(keep, oy, 0.0)


def _local_mean(maps, x, y, window):
    """Centroid of the window x window neighbourhood (clipped to the map) weighted by max(h, 0)."""
    height, width = maps.shape[-2:]
    radius = window // 2
    padded = F.pad(maps, (radius, radius, radius, radius))  # outside: 0, weight 0
    offsets = torch.arange(-radius, radius + 1, device=maps.device)
    rows = (y[:, None] + radius + offsets)  # (N, window) in padded coordinates
    cols = (x[:, None] + radius + offsets)
    n = torch.arange(maps.shape[0], device=maps.device)[:, None, None]
    values = padded[n, rows[:, :, None], cols[:, None, :]]  # (N, window, window)
    finite = torch.isfinite(values).all(dim=(1, 2))  # docs/design.md: else the integer argmax stays
    patch = torch.where(finite[:, None, None], values.clamp_min(0.0), 0.0)
    total = patch.sum(dim=(1, 2))
    mean_x = (patch.sum(dim=1) * offsets).sum(dim=1) / total
    mean_y = (patch.sum(dim=2) * offsets).sum(dim=1) / total
    return torch.where(finite, mean_x, 0.0), torch.where(finite, mean_y, 0.0)




def _no_offset(maps, x, y, blur_kernel, window):
    zero = torch.zeros_like(x, dtype=torch.float32)
    return zero, zero


# The sub-pixel offset of each method of kpfast.vocabulary.DECODE_METHODS (tests/ops/
# test_vocabulary.py checks that the keys are exactly those): (maps, argmax x, y, blur_kernel,
# window) -> (dx, dy). The refined methods' points are then clipped to the map (clip_to_map).
OFFSETS = {
    "argmax": _no_offset,
    "quarter": lambda maps, x, y, blur_kernel, window: _quarter_offset(maps, x, y),
    "dark": lambda maps, x, y, blur_kernel, window: _dark_offset(maps, x, y, blur_kernel),
    "udp": lambda maps, x, y, blur_kernel, window: _udp_offset(maps, x, y, blur_kernel),
    "local_mean": lambda maps, x, y, blur_kernel, window: _local_mean(maps, x, y, window),
}


def clip_to_map(x: torch.Tensor, y: torch.Tensor, height: int, width: int):
    """Coordinates clipped to the area the map covers, ``[-0.5, W-0.5] x [-0.5, H-0.5]`` (pixel
    ``(i, j)`` covers ``[j-0.5, j+0.5] x [i-0.5, i+0.5]``).

    A near-singular Hessian (flat or noise-only maps) makes the DARK/UDP Newton step arbitrarily
    long (50 px seen on 64x48 noise), and the published code returns such points far off the
    map. kpfast clips them to the map's area: a keypoint outside its heatmap is never a better
    answer than its border. Points within half a pixel of the border, which UDP's edge padding
    produces at border peaks, are kept as published."""
    return x.clamp(-0.5, width - 0.5), y.clamp(-0.5, height - 0.5)


def decode_heatmaps(heatmaps: torch.Tensor, method: str, blur_kernel: int, window: int):
    """coords (B, K, 2) float32 (x, y in heatmap pixels) and scores (B, K) float32.

    score = the map maximum; coords = -1 where it is <= 0. See kpfast.ops.decode_heatmaps."""
    batch, num_keypoints, height, width = heatmaps.shape
    maps = heatmaps.float().reshape(batch * num_keypoints, height, width)
    if maps.shape[0] == 0:
        return maps.new_empty((batch, num_keypoints, 2)), maps.new_empty((batch, num_keypoints))
    x, y, score, _ = heatmap_maximum(maps)
    fx, fy = x.float(), y.float()
    ox, oy = OFFSETS[method](maps, x, y, blur_kernel, window)
    px, py = fx + ox.float(), fy + oy.float()
    if method in REFINED_DECODE_METHODS:
        px, py = clip_to_map(px, py, height, width)
    positive = score > 0
    coords = torch.stack([torch.where(positive, px, -1.0), torch.where(positive, py, -1.0)], dim=-1)
    return coords.reshape(batch, num_keypoints, 2), score.reshape(batch, num_keypoints)


def soft_argmax(heatmaps: torch.Tensor, beta: float):
    """coords (B, K, 2) = the expectation of (x, y) under softmax(beta * h) over each map (pixel
    (i, j) at x=j, y=i), and scores (B, K) = the map maximum (not differentiable).

    Computed in float32 (float64 for float64 maps); differentiable w.r.t. heatmaps by autograd."""
    batch, num_keypoints, height, width = heatmaps.shape
    compute = torch.float64 if heatmaps.dtype == torch.float64 else torch.float32
    maps = heatmaps.to(compute).reshape(batch, num_keypoints, height * width)
    # softmax(beta * (h - max)), as the kernels compute it: beta * h alone overflows to inf for a
    # finite peak (1e37 with beta 100) and inf - inf gave NaN coordinates. A NaN or +inf pixel
    # still makes the coordinates NaN (through h - max), as documented.
    best = maps.detach().amax(dim=-1, keepdim=True) if maps.shape[-1] > 0 else maps.detach()[..., :1]
    probabilities = torch.softmax(beta * (maps - best), dim=-1).reshape(batch, num_keypoints, height, width)
    cols = torch.arange(width, dtype=compute, device=heatmaps.device)
    rows = torch.arange(height, dtype=compute, device=heatmaps.device)
    x = (probabilities.sum(dim=2) * cols).sum(dim=-1)
    y = (probabilities.sum(dim=3) * rows).sum(dim=-1)
    scores = maps.detach().amax(dim=-1) if maps.shape[-1] > 0 else maps.new_zeros((batch, num_keypoints))
    scores = torch.where(torch.isposinf(scores), math.nan, scores)  # docs/design.md: +inf -> NaN score
    return torch.stack([x, y], dim=-1), scores


def find_peaks(heatmaps: torch.Tensor, threshold: float, min_distance: int, max_peaks: int):
    """Local maxima with non-maximum suppression, the top ``max_peaks`` per map by score.

    A pixel is a peak when its value is > threshold, >= every pixel of its (2d+1)^2 window
    (clipped to the map) and > every pixel of that window that comes earlier in row-major
    order (so a plateau yields its first pixel only); NaN pixels are neither peaks nor in any
    window, +inf pixels are ordinary values. Peaks are sorted by score, descending,
    ties by row-major index. Returns coords (B, K, P, 2) float32 (x, y; -1 when invalid), scores
    (B, K, P) float32 (0 when invalid) and valid (B, K, P) bool."""
    batch, num_keypoints, height, width = heatmaps.shape
    if batch * num_keypoints == 0:  # no map: empty outputs (reshape(0, -1) below would be ambiguous)
        return (heatmaps.new_empty((batch, num_keypoints, max_peaks, 2), dtype=torch.float32),
                heatmaps.new_empty((batch, num_keypoints, max_peaks), dtype=torch.float32),
                heatmaps.new_empty((batch, num_keypoints, max_peaks), dtype=torch.bool))
    maps = heatmaps.float().reshape(batch * num_keypoints, 1, height, width)
    d = min_distance
    # NaN pixels are skipped (docs/design.md): never peaks (NaN > threshold is false) and never
    # suppress a neighbour (max_pool2d would propagate them into the window maximum).
    numbers = torch.where(torch.isnan(maps), -math.inf, maps)
    window_max = F.max_pool2d(numbers, 2 * d + 1, stride=1, padding=d) if d > 0 else maps
    is_peak = (maps >= window_max) & (maps > threshold)
    # Ties: an equal pixel earlier in row-major order within the window suppresses this one.
    padded = F.pad(maps, (d, d, d, d), value=-math.inf)
    for dy in range(-d, 1):
        for dx in range(-d, d + 1):
            if dy == 0 and dx >= 0:
                break
            shifted = padded[:, :, d + dy:d + dy + height, d + dx:d + dx + width]
            is_peak &= shifted != maps
    flat_scores = torch.where(is_peak, maps, -math.inf).reshape(batch * num_keypoints, -1)
    order = torch.sort(flat_scores, dim=1, descending=True, stable=True)
    count = min(max_peaks, height * width)
    scores = order.values[:, :count]
    index = order.indices[:, :count]
    valid = scores > -math.inf  # every peak is > threshold >= -inf; +inf peaks are valid (docs/design.md)
    coords = torch.stack([(index % width).float(), (index // width).float()], dim=-1)
    coords = torch.where(valid[..., None], coords, -1.0)
    scores = torch.where(valid, scores, 0.0)
    if count < max_peaks:  # fewer pixels than requested peaks: pad with invalid slots
        pad = max_peaks - count
        coords = F.pad(coords, (0, 0, 0, pad), value=-1.0)
        scores = F.pad(scores, (0, pad), value=0.0)
        valid = F.pad(valid, (0, pad), value=False)
    return (coords.reshape(batch, num_keypoints, max_peaks, 2), scores.reshape(batch, num_keypoints, max_peaks),
            valid.reshape(batch, num_keypoints, max_peaks))
