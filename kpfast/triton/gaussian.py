"""The Gaussian target rule in Triton, shared by the render and loss kernels.

The same rule as csrc/kpfast/gaussian.h and kpfast/reference/render.py (see there). Window
bounds stay in floating point, so huge or non-finite coordinates never overflow an integer;
an invalid keypoint is masked out by ``valid``.
"""

import triton
import triton.language as tl

from kpfast.vocabulary import ENCODING_CODES

# The codes of kpfast/vocabulary.py (the ENCODING constexpr the kernels are compiled for), as
# tl.constexpr instances: Triton's compiler reads no other module global inside @triton.jit.
ENCODINGS = ENCODING_CODES
MSRA = tl.constexpr(ENCODING_CODES["msra"])
UDP = tl.constexpr(ENCODING_CODES["udp"])
DARK = tl.constexpr(ENCODING_CODES["dark"])


@triton.jit
def _is_finite(v):
    # inf - inf and nan - nan are nan; every finite value minus itself is 0.
    return (v - v) == 0.0


@triton.jit
def gaussian_window(x, y, weight, sigma, height, width, ENCODING: tl.constexpr):
    """(valid, cx, cy, x0, x1, y0, y1, inv_two_sigma_sq) of one keypoint on an H x W map."""
    valid = _is_finite(x) & _is_finite(y) & _is_finite(weight) & (weight >= 0.5) & _is_finite(sigma) & (sigma > 0.0)
    radius = tl.floor(3.0 * sigma)
    mu_x = tl.floor(x + 0.5)
    mu_y = tl.floor(y + 0.5)
    outside = (mu_x - radius > width - 1) | (mu_x + radius < 0.0) | (mu_y - radius > height - 1) | (mu_y + radius < 0.0)
    valid = valid & (outside == 0)
    if ENCODING == MSRA:
        cx = mu_x
        cy = mu_y
    else:
        cx = x
        cy = y
    if ENCODING == DARK:
        x0 = -1.0e30
        x1 = 1.0e30
        y0 = -1.0e30
        y1 = 1.0e30
    else:
        x0 = mu_x - radius
        x1 = mu_x + radius
        y0 = mu_y - radius
        y1 = mu_y + radius
    # An ignored keypoint's centre may be inf or nan: pin it so that no product with a zero
    # weight turns into nan downstream (0 * inf).
    cx = tl.where(valid, cx, 0.0)
    cy = tl.where(valid, cy, 0.0)
    inv_two_sigma_sq = 1.0 / (2.0 * sigma * sigma)
    return valid, cx, cy, x0, x1, y0, y1, inv_two_sigma_sq


@triton.jit
def gaussian_tile(rows, cols, x, y, weight, sigma, height, width, ENCODING: tl.constexpr):
    """The Gaussian of one keypoint on a (rows x cols) tile, zero outside its window.

    rows and cols are float32 1-D index vectors; returns (values, valid, cx, cy, c)."""
    valid, cx, cy, x0, x1, y0, y1, c = gaussian_window(x, y, weight, sigma, height, width, ENCODING)
    dx = cols - cx
    dy = rows - cy
    ex = tl.where((cols >= x0) & (cols <= x1), tl.exp(-dx * dx * c), 0.0)
    ey = tl.where((rows >= y0) & (rows <= y1), tl.exp(-dy * dy * c), 0.0)
    values = ey[:, None] * ex[None, :]
    values = tl.where(valid, values, 0.0)
    return values, valid, cx, cy, c


# ---- the one-launch argument convention (csrc/kpfast/gaussian.h MapSigma / weight_at) ----------
# Absent weights and a float sigma are not materialised: the launcher passes any tensor as the
# pointer (never read) with HAS_WEIGHTS / HAS_SIGMA False, and sigma_value for every map; a tensor
# sigma is a (B, K) view with any strides (a (K,) sigma expanded: stride_b 0).


@triton.jit
def load_weight(weights_ptr, idx, HAS_WEIGHTS: tl.constexpr):
    """The weight of keypoint ``idx`` of a contiguous (B, N, K) tensor; 1 without weights."""
    if HAS_WEIGHTS:
        weight = tl.load(weights_ptr + idx)
    else:
        weight = tl.full([], 1.0, tl.float32)
    return weight


@triton.jit
def load_sigma(sigma_ptr, b, k, stride_b, stride_k, sigma_value, HAS_SIGMA: tl.constexpr):
    """Map (b, k)'s sigma: from the strided (B, K) tensor, or sigma_value without one."""
    if HAS_SIGMA:
        sigma = tl.load(sigma_ptr + b * stride_b + k * stride_k)
    else:
        sigma = tl.full([], sigma_value, tl.float32)
    return sigma
