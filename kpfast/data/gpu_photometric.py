"""Batched photometric augmentation in torch, equal to the CPU path's albumentations transforms.

The CPU pipeline (kpfast/data/augment.py, ``CropAugmenter``) runs albumentations 2.0.8 per sample.
A batch that is decoded and warped on the GPU never passes through it, so this module applies
the same photometric transforms to a whole ``(B, 3, H, W)`` uint8 RGB batch, on whatever device
the batch is on, with torch only (no torchvision, no kornia)::

    augmenter = PhotometricAugmenter.from_config(resolved["albumentations"])
    images = augmenter(images, generator)          # generator: a CPU torch.Generator

Supported: :data:`SUPPORTED_TYPES`, the photometric entries of ``DEFAULT_AUGMENTATION``. For
each sample each transform fires with its ``p``, in the list's order, with its parameters drawn
from the distributions albumentations 2.0.8 draws them from (same ranges and laws, not the same
random stream: albumentations uses Python's and numpy's generators, this uses torch's). The
parameters are small CPU tensors drawn from the generator (:meth:`PhotometricAugmenter.sample`),
so a batch's augmentation is a pure function of the generator's state; pixels are processed on
the images' device (:meth:`PhotometricAugmenter.apply`).

Pixel formulas follow albumentations (and the OpenCV calls it makes) for the same parameters;
tests/data/test_gpu_photometric.py checks each against albumentations' own ``apply``:

- HueSaturationValue: OpenCV's uint8 RGB->HSV (hue in [0, 180), its fixed-point division
  tables), hue shifted modulo 180 by the shift's floor, saturation and value by the shift
  truncated toward zero with saturation (grey pixels keep S = 0), and OpenCV's float HSV->RGB.
- RandomGamma: albumentations' 256-entry table ``trunc(255 * (i / 255) ** gamma)``.
- GaussianBlur: albumentations' normalised 1-D kernel, applied as OpenCV's ``sepFilter2D``
  (float32 row then column pass, rounded) with ``BORDER_REFLECT_101``.
- MotionBlur: albumentations' rasterised line kernel (angle, direction bias, optional shift),
  normalised, applied as ``filter2D`` (float sums, rounded) with ``BORDER_REFLECT_101``.
- CoarseDropout: holes sized as fractions of H/W (or in pixels), placed uniformly, filled with
  a constant (one value or one per channel).

Measured differences from albumentations and why they are not zero: docs/data.md, "GPU
photometric augmentation".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

__all__ = ["SUPPORTED_TYPES", "PhotometricAugmenter", "StepParams"]

SUPPORTED_TYPES = ("HueSaturationValue", "RandomGamma", "GaussianBlur", "MotionBlur", "CoarseDropout")

_DEVICE_TYPES = ("cpu", "cuda")
_CPU_CHUNK_PIXELS = 2**19

# float32 constants as OpenCV computes them (6.0f / 180 and 1.0f / 255), kept as Python floats
# holding those float32 values, so float32 tensor arithmetic uses exactly them.
_F32_6_OVER_180 = float(torch.tensor(6.0, dtype=torch.float32) / 180)
_F32_1_OVER_255 = float(torch.tensor(1.0, dtype=torch.float32) / 255)


@dataclass
class StepParams:
    """One transform's draw for a batch: ``applied`` (B,) bool, and per-sample parameters (CPU
    tensors with leading dimension B, drawn for every sample whether it fires or not)."""

    name: str
    applied: torch.Tensor
    values: dict[str, torch.Tensor] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Config parsing: the ranges albumentations 2.0.8's pydantic schemas build from a number or pair.


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _pair(value, where: str, low: float | None = None) -> tuple[float, float]:
    """A ``[lo, hi]`` pair kept as given; a number ``v`` becomes ``(-v, v)`` or, with ``low``,
    the sorted ``(low, v)`` (albumentations' ``to_tuple``)."""
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(_is_number(v) for v in value):
            raise ValueError(f"{where} must be a number or [lo, hi], got {value!r}")
        lo, hi = float(value[0]), float(value[1])
    elif _is_number(value):
        lo, hi = (-float(value), float(value)) if low is None else sorted((float(low), float(value)))
    else:
        raise ValueError(f"{where} must be a number or [lo, hi], got {value!r}")
    if lo > hi:
        raise ValueError(f"{where} must have lo <= hi, got {value!r}")
    return lo, hi


def _uniform(lo: float, hi: float, n: int, gen: torch.Generator) -> torch.Tensor:
    # Python's random.uniform(a, b) is a + (b - a) * random(), which albumentations calls.
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def _randint(lo: int, hi: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Uniform integers in [lo, hi], both included (random.randint), as int64."""
    return torch.randint(int(lo), int(hi) + 1, (n,), generator=gen, dtype=torch.int64)


# ---------------------------------------------------------------------------------------------
# Shared pixel helpers.


def _reflect101_index(size: int, pad: int, device) -> torch.Tensor:
    """Source index of each position of a ``pad``-padded axis under OpenCV's BORDER_REFLECT_101
    (``gfedcb|abcdefgh|gfedcba``), reflecting again as OpenCV does when ``pad >= size``."""
    i = torch.arange(-pad, size + pad, device=device)
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    m = torch.remainder(i, period)
    return torch.where(m >= size, period - m, m)


def _pad_reflect101(x: torch.Tensor, pad: int) -> torch.Tensor:
    if pad == 0:
        return x
    h, w = x.shape[-2:]
    x = x.index_select(-1, _reflect101_index(w, pad, x.device))
    return x.index_select(-2, _reflect101_index(h, pad, x.device))


def _round_to_uint8(x: torch.Tensor) -> torch.Tensor:
    # OpenCV's saturate_cast<uchar>(float) rounds half to even, as torch.round does.
    return torch.round(x).clamp_(0, 255).to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# Transforms. Each one: ``sample(n, height, width, gen) -> dict`` of CPU tensors, and
# ``apply(x, values) -> x`` on the uint8 (n, 3, H, W) samples that fire.


class _Step:
    name = ""
    keys: tuple[str, ...] = ()

    def __init__(self, p: float):
        self.p = p

    def sample(self, n: int, height: int, width: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def active(self, values: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Samples whose draw changes nothing (skipped as albumentations skips them), or None."""
        return None

    def apply(self, x: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class _HueSaturationValue(_Step):
    name = "HueSaturationValue"
    keys = ("hue_shift_limit", "sat_shift_limit", "val_shift_limit")

    def __init__(self, p, hue_shift_limit=(-20, 20), sat_shift_limit=(-30, 30), val_shift_limit=(-20, 20)):
        super().__init__(p)
        self.hue = _pair(hue_shift_limit, f"{self.name}.hue_shift_limit")
        self.sat = _pair(sat_shift_limit, f"{self.name}.sat_shift_limit")
        self.val = _pair(val_shift_limit, f"{self.name}.val_shift_limit")

    def sample(self, n, height, width, gen):
        return {"hue_shift": _uniform(*self.hue, n, gen), "sat_shift": _uniform(*self.sat, n, gen),
                "val_shift": _uniform(*self.val, n, gen)}

    def active(self, values):
        # fpixel.shift_hsv returns the image untouched when all three shifts are exactly 0;
        # any other draw goes through the (lossy) HSV round trip.
        return (values["hue_shift"] != 0) | (values["sat_shift"] != 0) | (values["val_shift"] != 0)

    def apply(self, x, values):
        device = x.device
        n = x.shape[0]
        r, g, b = (x[:, c].to(torch.int32) for c in range(3))
        v = torch.maximum(torch.maximum(r, g), b)
        diff = v - torch.minimum(torch.minimum(r, g), b)
        # OpenCV's RGB2HSV_b (fixed point, hsv_shift 12) divides through the tables
        # round((255 << 12) / v) and round((180 << 12) / (6 * diff)) = round(122880 / diff).
        # Computed here instead of looked up (a gather costs more): torch divides a scalar by a
        # tensor as reciprocal times scalar, two float32 roundings, so the quotient q = N / d is
        # within q * 2**-23 <= 0.125 / d of the exact one, while no exact quotient comes closer
        # to a .5 than 1 / (2 * d) (N = 2**12 * 255 or 2**13 * 15, d <= 255): same rounding.
        sdiv = torch.round(1044480.0 / v.clamp(min=1).to(torch.float32)).to(torch.int32)
        hdiv = torch.round(122880.0 / diff.clamp(min=1).to(torch.float32)).to(torch.int32)
        s = (diff * sdiv + 2048) >> 12  # diff == 0 wherever v == 0, so the clamp changes nothing
        h = torch.where(v == r, g - b, torch.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
        h = (h * hdiv + 2048) >> 12  # diff == 0 gives h == 0, as the table's 0 entry does
        h = torch.where(h < 0, h + 180, h)
        del r, g, b, sdiv, hdiv

        def per_sample(t):
            return t.view(n, 1, 1).to(device)

        # Hue: albumentations' table is mod(h + shift, 180) cast to uint8, i.e. the floor of the
        # fractional shift for integer h; S and V: cv2.add of int(shift) (toward zero), saturated.
        h = torch.remainder(h + per_sample(torch.floor(values["hue_shift"]).to(torch.int32)), 180)
        s_shift = per_sample(torch.trunc(values["sat_shift"]).to(torch.int32))
        s = torch.where(s == 0, s, (s + s_shift).clamp_(0, 255))
        v = (v + per_sample(torch.trunc(values["val_shift"]).to(torch.int32))).clamp_(0, 255)

        # OpenCV's HSV2RGB_b, vectorised path (HSV2RGB_simd, modules/imgproc color_hsv): float32,
        # h * (6 / 180) split into sector and fraction, s and v times 1/255; its AVX2 build fuses
        # 1 - s * f into one rounding (emulated by the exact float64 product rounded once), and
        # the result times 255 is truncated, not rounded. See docs/data.md for the scalar tail.
        hf = h.to(torch.float32) * _F32_6_OVER_180
        sector = torch.floor(hf)
        frac = hf - sector
        sf = s.to(torch.float32) * _F32_1_OVER_255
        vf = v.to(torch.float32) * _F32_1_OVER_255
        del h, s, v, hf
        s64 = sf.to(torch.float64)
        t1 = vf * (1 - sf)
        t2 = vf * (1 - s64 * frac.to(torch.float64)).to(torch.float32)
        t3 = vf * (1 - s64 * (1 - frac).to(torch.float64)).to(torch.float32)
        del s64, frac, sf
        # OpenCV's sector_data as (r, g, b) per sector: 0 (v, t3, t1), 1 (t2, v, t1),
        # 2 (t1, v, t3), 3 (t1, t2, v), 4 (t3, t1, v), 5 (v, t1, t2).
        sec = [sector == k for k in range(6)]
        red = torch.where(sec[0] | sec[5], vf, torch.where(sec[1], t2, torch.where(sec[4], t3, t1)))
        green = torch.where(sec[1] | sec[2], vf, torch.where(sec[3], t2, torch.where(sec[0], t3, t1)))
        blue = torch.where(sec[3] | sec[4], vf, torch.where(sec[5], t2, torch.where(sec[2], t3, t1)))
        out = torch.stack([red, green, blue], 1).mul_(255).clamp_(0, 255)
        return out.to(torch.uint8)  # float -> uint8 truncates toward zero, as OpenCV's v_trunc


class _RandomGamma(_Step):
    name = "RandomGamma"
    keys = ("gamma_limit",)

    def __init__(self, p, gamma_limit=(80, 120)):
        super().__init__(p)
        self.limit = _pair(gamma_limit, f"{self.name}.gamma_limit", low=1)
        if self.limit[0] <= 0:
            raise ValueError(f"{self.name}.gamma_limit must be > 0 (percent), got {gamma_limit!r}")

    def sample(self, n, height, width, gen):
        return {"gamma": _uniform(*self.limit, n, gen) / 100.0}

    def apply(self, x, values):
        n = x.shape[0]
        # fpixel.gamma_transform's uint8 table, truncated by astype(np.uint8), built in float64.
        base = torch.arange(256, dtype=torch.float64) * (1.0 / 255)
        table = torch.trunc(base.unsqueeze(0) ** values["gamma"].unsqueeze(1) * 255).clamp_(0, 255)
        table = table.to(x.device, torch.uint8)
        flat = x.reshape(n, -1).long()
        return torch.gather(table, 1, flat).view_as(x)


def _gaussian_kernels(ksize: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(n, kmax) float64 kernels as albumentations' create_gaussian_kernel_1d, centred in kmax."""
    kmax = int(ksize.max())
    offsets = torch.arange(kmax, dtype=torch.float64) - kmax // 2
    half = (ksize // 2).unsqueeze(1)
    inside = offsets.abs().unsqueeze(0) <= half
    k = torch.exp(-0.5 * (offsets.unsqueeze(0) / sigma.unsqueeze(1)) ** 2) * inside
    return k / k.sum(1, keepdim=True)


class _GaussianBlur(_Step):
    name = "GaussianBlur"
    keys = ("blur_limit", "sigma_limit")

    def __init__(self, p, blur_limit=0, sigma_limit=(0.5, 3.0)):
        super().__init__(p)
        lo, hi = _pair(blur_limit, f"{self.name}.blur_limit", low=0)
        if lo < 0 or lo != int(lo) or hi != int(hi):
            raise ValueError(f"{self.name}.blur_limit must be integers >= 0, got {blur_limit!r}")
        self.blur = (int(lo), int(hi))
        self.sigma = _pair(sigma_limit, f"{self.name}.sigma_limit", low=0)
        if self.sigma[0] <= 0:  # sigma 0 makes albumentations' kernel 0/0
            raise ValueError(f"{self.name}.sigma_limit must be > 0, got {sigma_limit!r}")

    def sample(self, n, height, width, gen):
        # GaussianBlur.get_params_dependent_on_data: sigma uniform, then ksize = randint over
        # all integers of blur_limit; create_gaussian_kernel_1d makes 0 -> int(3.5 sigma)*2+1
        # and bumps an even size to the next odd one.
        sigma = _uniform(*self.sigma, n, gen)
        ksize = _randint(*self.blur, n, gen)
        ksize = torch.where(ksize == 0, torch.floor(sigma * 3.5).to(torch.int64) * 2 + 1, ksize)
        ksize = ksize + (ksize % 2 == 0).to(torch.int64)
        return {"ksize": ksize, "sigma": sigma}

    def apply(self, x, values):
        n, c, hgt, wid = x.shape
        # sepFilter2D on uint8 with this float kernel (measured on OpenCV 5.1: it is not the
        # fixed-point path): float32 coefficients, a row pass then a column pass summed in float32,
        # rounded. The summation order inside OpenCV is not reproduced, so a sum within an ulp of
        # .5 may round the other way: 1 grey level on a few pixels (docs/data.md).
        kernel = _gaussian_kernels(values["ksize"], values["sigma"]).to(torch.float32)
        kmax = kernel.shape[1]
        pad = kmax // 2
        used = (kernel != 0).any(0).tolist()
        kernel = kernel.to(x.device).view(n, 1, 1, 1, kmax)
        src = _pad_reflect101(x, pad).to(torch.float32)
        # Elementwise taps rather than conv2d: on CUDA a convolution may run in TF32.
        rows = torch.zeros((n, c, hgt + 2 * pad, wid), dtype=torch.float32, device=x.device)
        for j in range(kmax):
            if used[j]:
                rows += kernel[..., j] * src[..., :, j:j + wid]
        del src
        acc = torch.zeros((n, c, hgt, wid), dtype=torch.float32, device=x.device)
        for i in range(kmax):
            if used[i]:
                acc += kernel[..., i] * rows[..., i:i + hgt, :]
        return _round_to_uint8(acc)


def _motion_kernels(ksize, angle, direction, shift_x, shift_y, allow_shifted: bool) -> torch.Tensor:
    """(n, kmax, kmax) float32 kernels: albumentations' create_motion_kernel (a line of ksize
    points through the centre, rounded to pixels) divided by its point count, centred in kmax."""
    n = ksize.shape[0]
    kmax = int(ksize.max())
    kf = ksize.to(torch.float64).unsqueeze(1)
    half = (ksize // 2).to(torch.float64).unsqueeze(1)
    d = direction.clamp(-1.0, 1.0).unsqueeze(1)
    t_start = torch.where(d > 0, -half * (1 - d), -half)
    t_end = torch.where(d < 0, half * (1 + d), half)
    # np.linspace: start + i * step, the last point set to stop exactly.
    i = torch.arange(kmax, dtype=torch.float64).unsqueeze(0)
    t = i * ((t_end - t_start) / (kf - 1)) + t_start
    t = torch.where(i == kf - 1, t_end, t)
    rad = torch.deg2rad(angle).unsqueeze(1)
    px = half + torch.cos(rad) * t
    py = half + torch.sin(rad) * t
    if allow_shifted:
        px = px + shift_x.unsqueeze(1)
        py = py + shift_y.unsqueeze(1)
    px = torch.minimum(torch.round(px).clamp(min=0), kf - 1).to(torch.int64)
    py = torch.minimum(torch.round(py).clamp(min=0), kf - 1).to(torch.int64)
    offset = ((kmax - ksize) // 2).unsqueeze(1)
    flat = torch.arange(n).unsqueeze(1) * kmax * kmax + (py + offset) * kmax + (px + offset)
    kernel = torch.zeros(n * kmax * kmax, dtype=torch.float32)
    kernel[flat[(i < kf).expand(n, kmax)]] = 1.0
    kernel = kernel.view(n, kmax, kmax)
    count = kernel.sum((1, 2), keepdim=True)
    return kernel / count


class _MotionBlur(_Step):
    name = "MotionBlur"
    keys = ("blur_limit", "allow_shifted", "angle_range", "direction_range")

    def __init__(self, p, blur_limit=(3, 7), allow_shifted=True, angle_range=(0, 360), direction_range=(-1.0, 1.0)):
        super().__init__(p)
        lo, hi = _pair(blur_limit, f"{self.name}.blur_limit", low=3)
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"{self.name}.blur_limit must be integers, got {blur_limit!r}")
        # sample_odd_from_range's normalisation: at least 3, even bounds bumped to odd.
        lo = max(3, int(lo) + (int(lo) % 2 == 0))
        hi = max(lo, max(3, int(hi) + (int(hi) % 2 == 0)))
        self.blur = (lo, hi)
        if not isinstance(allow_shifted, bool):
            raise ValueError(f"{self.name}.allow_shifted must be true or false, got {allow_shifted!r}")
        self.allow_shifted = allow_shifted
        self.angle = _pair(angle_range, f"{self.name}.angle_range")
        self.direction = _pair(direction_range, f"{self.name}.direction_range")
        if not -1.0 <= self.direction[0] <= self.direction[1] <= 1.0:
            raise ValueError(f"{self.name}.direction_range must lie in [-1, 1], got {direction_range!r}")

    def sample(self, n, height, width, gen):
        # MotionBlur.get_params: an odd size, angle and direction uniform, then (only when
        # allow_shifted) two uniform(-1, 1) * (ksize // 2) / 2 shifts of the line.
        ksize = self.blur[0] + 2 * _randint(0, (self.blur[1] - self.blur[0]) // 2, n, gen)
        angle = _uniform(*self.angle, n, gen)
        direction = _uniform(*self.direction, n, gen)
        half = (ksize // 2).to(torch.float64)
        shift_x = _uniform(-1.0, 1.0, n, gen) * half / 2
        shift_y = _uniform(-1.0, 1.0, n, gen) * half / 2
        if not self.allow_shifted:
            shift_x = torch.zeros_like(shift_x)
            shift_y = torch.zeros_like(shift_y)
        return {"ksize": ksize, "angle": angle, "direction": direction, "shift_x": shift_x, "shift_y": shift_y}

    def kernels(self, values) -> torch.Tensor:
        return _motion_kernels(values["ksize"], values["angle"], values["direction"], values["shift_x"],
                               values["shift_y"], self.allow_shifted)

    def apply(self, x, values):
        n, c, hgt, wid = x.shape
        kernel = self.kernels(values)
        kmax = kernel.shape[1]
        pad = kmax // 2
        used = (kernel != 0).any(0).tolist()
        kernel = kernel.to(x.device).view(n, 1, 1, 1, kmax, kmax)
        src = _pad_reflect101(x, pad).to(torch.float32)
        # filter2D (a correlation) sums float32 products of the nonzero taps; a per-tap loop of
        # elementwise products keeps float32 on CUDA too, where a convolution may run in TF32.
        acc = torch.zeros((n, c, hgt, wid), dtype=torch.float32, device=x.device)
        for i in range(kmax):
            for j in range(kmax):
                if used[i][j]:
                    acc += kernel[..., i, j] * src[..., i:i + hgt, j:j + wid]
        return _round_to_uint8(acc)


class _CoarseDropout(_Step):
    name = "CoarseDropout"
    keys = ("num_holes_range", "hole_height_range", "hole_width_range", "fill", "fill_mask")

    def __init__(self, p, num_holes_range=(1, 2), hole_height_range=(0.1, 0.2), hole_width_range=(0.1, 0.2),
                 fill=0, fill_mask=None):  # fill_mask only fills masks, which this path has none of
        super().__init__(p)
        holes = _pair(num_holes_range, f"{self.name}.num_holes_range")
        if holes[0] < 1 or holes[0] != int(holes[0]) or holes[1] != int(holes[1]):
            raise ValueError(f"{self.name}.num_holes_range must be integers >= 1, got {num_holes_range!r}")
        self.holes = (int(holes[0]), int(holes[1]))
        self.height = _pair(hole_height_range, f"{self.name}.hole_height_range")
        self.width = _pair(hole_width_range, f"{self.name}.hole_width_range")
        if self.height[0] < 0 or self.width[0] < 0:
            raise ValueError(f"{self.name} hole ranges must be >= 0, got {hole_height_range!r}, {hole_width_range!r}")
        values = fill if isinstance(fill, (list, tuple)) else [fill]
        if len(values) not in (1, 3) or not all(_is_number(v) and 0 <= v < 256 for v in values):
            raise ValueError(f"{self.name}.fill must be a number or 3 numbers in [0, 255] (the 'random' and "
                             f"inpainting fills are not supported here), got {fill!r}")
        # cutout converts the fill with np.array(fill, dtype=uint8): truncation.
        self.fill = torch.tensor([int(v) for v in values] * (3 // len(values)), dtype=torch.uint8)

    def sample(self, n, height, width, gen):
        # CoarseDropout.get_params_dependent_on_data: a hole count, then sizes (fractions of the
        # side, truncated, when hole_height_range's upper bound is below 1; else pixels), then
        # top-left corners uniform over the positions that keep the hole inside.
        count = _randint(*self.holes, n, gen)
        k = self.holes[1]
        if self.height[1] >= 1:  # pixels: integers in [lo, min(hi, side)]
            hlo, hhi = int(self.height[0]), int(min(self.height[1], height))
            wlo, whi = int(self.width[0]), int(min(self.width[1], width))
            hh = hlo + torch.floor(torch.rand((n, k), generator=gen, dtype=torch.float64) * (hhi - hlo + 1))
            ww = wlo + torch.floor(torch.rand((n, k), generator=gen, dtype=torch.float64) * (whi - wlo + 1))
        else:  # fractions of the side, truncated by astype(int)
            hh = height * _uniform(*self.height, n * k, gen).view(n, k)
            ww = width * _uniform(*self.width, n * k, gen).view(n, k)
        hh = hh.to(torch.int64)
        ww = ww.to(torch.int64)
        hh = hh.clamp(max=height)
        ww = ww.clamp(max=width)
        y0 = torch.floor(torch.rand((n, k), generator=gen, dtype=torch.float64) * (height - hh + 1)).to(torch.int64)
        x0 = torch.floor(torch.rand((n, k), generator=gen, dtype=torch.float64) * (width - ww + 1)).to(torch.int64)
        holes = torch.stack([x0, y0, x0 + ww, y0 + hh], dim=-1)
        holes[torch.arange(k).unsqueeze(0) >= count.unsqueeze(1)] = 0  # unused slots: empty holes
        return {"num_holes": count, "holes": holes}

    def apply(self, x, values):
        n, c, hgt, wid = x.shape
        holes = values["holes"].to(x.device)
        ys = torch.arange(hgt, device=x.device).view(1, 1, hgt)
        xs = torch.arange(wid, device=x.device).view(1, 1, wid)
        rows = (ys >= holes[..., 1:2]) & (ys < holes[..., 3:4])  # (n, k, H)
        cols = (xs >= holes[..., 0:1]) & (xs < holes[..., 2:3])  # (n, k, W)
        mask = (rows.unsqueeze(-1) & cols.unsqueeze(-2)).any(1)  # (n, H, W)
        return torch.where(mask.unsqueeze(1), self.fill.to(x.device).view(1, 3, 1, 1), x)


_STEPS = {cls.name: cls for cls in (_HueSaturationValue, _RandomGamma, _GaussianBlur, _MotionBlur, _CoarseDropout)}


# ---------------------------------------------------------------------------------------------


class PhotometricAugmenter:
    """The supported albumentations entries as batched torch transforms, in the list's order."""

    def __init__(self, steps: Sequence[_Step]):
        self.steps = list(steps)

    @classmethod
    def from_config(cls, entries: Sequence[Mapping[str, Any]] | None) -> "PhotometricAugmenter":
        """Build from a resolved ``albumentations`` list (``resolve_augmentation_config(...)
        ["albumentations"]``). Entries with ``p == 0`` are skipped, as the CPU path skips them;
        any other type, or a parameter this module does not implement, is a ValueError."""
        steps = []
        for index, entry in enumerate(entries or []):
            if not isinstance(entry, Mapping) or "type" not in entry:
                raise ValueError(f"albumentations entry {index} needs a 'type', got {entry!r}")
            name = entry["type"]
            p = entry.get("p", 0.5)  # albumentations' default, as CropAugmenter reads it
            if not _is_number(p) or not 0.0 <= p <= 1.0:
                raise ValueError(f"albumentations entry {index} ({name}): p must be in [0, 1], got {p!r}")
            if p == 0:
                continue
            step_cls = _STEPS.get(name)
            if step_cls is None:
                raise ValueError(f"albumentations entry {index} (type {name!r}, p={p}) has no batched torch "
                                 f"version; supported: {', '.join(SUPPORTED_TYPES)}")
            params = {k: v for k, v in entry.items() if k not in ("type", "p")}
            unknown = sorted(set(params) - set(step_cls.keys))
            if unknown:
                raise ValueError(f"albumentations entry {index} ({name}): unsupported parameter(s) {unknown}; "
                                 f"supported: {list(step_cls.keys)}")
            steps.append(step_cls(float(p), **params))
        return cls(steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def names(self) -> list[str]:
        return [step.name for step in self.steps]

    def sample(self, batch_size: int, height: int, width: int, generator: torch.Generator) -> list[StepParams]:
        """Draw every step's firing and parameters for a batch, on the CPU ``generator``."""
        _check_generator(generator)
        draws = []
        for step in self.steps:
            applied = torch.rand(batch_size, generator=generator, dtype=torch.float64) < step.p
            values = step.sample(batch_size, height, width, generator)
            active = step.active(values)
            if active is not None:
                applied &= active
            draws.append(StepParams(step.name, applied, values))
        return draws

    def apply(self, images: torch.Tensor, params: Sequence[StepParams]) -> torch.Tensor:
        """Apply drawn parameters (from :meth:`sample`) to ``images``; returns a new tensor."""
        _check_images(images)
        if len(params) != len(self.steps) or any(p.name != s.name for p, s in zip(params, self.steps)):
            raise ValueError(f"params are for steps {[p.name for p in params]}, this augmenter has {self.names}")
        out = images
        for step, draw in zip(self.steps, params):
            if draw.applied.shape != (images.shape[0],):
                raise ValueError(f"params for {step.name} are for a batch of {tuple(draw.applied.shape)}, "
                                 f"images have batch size {images.shape[0]}")
            idx = torch.nonzero(draw.applied).flatten()
            if idx.numel() == 0:
                continue
            if out is images:
                out = images.clone()
            for chunk in idx.split(_chunk_size(images)):
                values = {k: v.index_select(0, chunk) for k, v in draw.values.items()}
                dev_idx = chunk.to(images.device)
                out.index_copy_(0, dev_idx, step.apply(out.index_select(0, dev_idx), values))
        return out

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a uint8 (B, 3, H, W) RGB batch; deterministic given the generator's state."""
        _check_images(images)
        _check_generator(generator)
        if images.shape[0] == 0:
            return images
        return self.apply(images, self.sample(images.shape[0], images.shape[2], images.shape[3], generator))

    def __repr__(self) -> str:
        return f"PhotometricAugmenter({', '.join(f'{s.name}(p={s.p:g})' for s in self.steps)})"


def _chunk_size(images: torch.Tensor) -> int:
    """Samples per call of a step: the whole batch on CUDA (fewer kernel launches); on the CPU
    about 2**19 pixels, so the full-size temporaries stay in cache instead of being faulted in
    afresh on every op (5-10x faster measured at B=64, 256x192)."""
    if images.device.type != "cpu":
        return max(1, images.shape[0])
    return max(1, _CPU_CHUNK_PIXELS // (images.shape[2] * images.shape[3]))


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a uint8 torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must have dtype torch.uint8, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W) (RGB), got {tuple(images.shape)}")
    if images.device.type not in _DEVICE_TYPES:
        raise ValueError(f"images must be on a {' or '.join(_DEVICE_TYPES)} device, got {images.device}")
    if images.shape[0] and (images.shape[2] == 0 or images.shape[3] == 0):
        raise ValueError(f"images must have H, W >= 1, got {tuple(images.shape)}")


def _check_generator(generator) -> None:
    if not isinstance(generator, torch.Generator) or generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU torch.Generator (parameters are drawn on the CPU), "
                         f"got {generator!r}")
