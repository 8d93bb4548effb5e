"""Coordinate transforms for top-down keypoint estimation -- the single place kpfast keeps them.

Conventions
-----------
* Points are ``(..., 2)`` arrays, ``x`` then ``y``, in pixel units; pixel ``(row i, col j)`` has its
  centre at ``(x=j, y=i)``.
* ``center`` is the box centre in image pixels, ``scale`` the box size ``(w, h)`` in image pixels
  *after* padding (not HRNet's "pixels / 200").
* ``output_size`` / ``input_size`` / ``heatmap_size`` given to the functions of this module are
  ``(w, h)``, as in ``cv2.warpAffine``'s ``dsize`` and the published reference code.
* ``rotation`` is in degrees. One sign for both conventions: a positive rotation turns the crop
  window by ``+rotation`` in image coordinates (HRNet's ``get_affine_transform`` sign), so the
  content appears rotated by ``-rotation`` inside the crop.

Two crop conventions:

``"standard"`` (HRNet / SimpleBaseline / MMPose ``get_affine_transform``)
    The box centre maps to ``output_size / 2`` and the box width to ``output_w`` pixels (scale
    factor ``output_w / scale_w``). Heatmaps are the input scaled by ``heatmap / input`` (the
    "stride" rule ``heatmap = input / stride``).

``"udp"`` (Huang et al., *The Devil is in the Details: Delving into Unbiased Data Processing*)
    Sizes are measured between the first and last pixel centres: the box centre maps to
    ``(output_size - 1) / 2`` and the scale factor is ``(output - 1) / scale`` per axis
    (``get_warp_matrix``); heatmaps are the input scaled by ``(heatmap - 1) / (input - 1)``.

Every function accepts numpy arrays or torch tensors and returns the same kind; the batched
matrix builders take ``center (N, 2)``, ``scale (N, 2)``, ``rotation (N,)`` and give ``(N, 2, 3)``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

__all__ = [
    "CONVENTIONS",
    "bbox_xywh_to_center_scale",
    "get_affine_transform",
    "get_warp_matrix",
    "crop_matrix",
    "heatmap_scale",
    "image_to_heatmap_matrix",
    "flip_matrix",
    "invert_affine",
    "compose_affine",
    "transform_points",
    "image_to_crop",
    "crop_to_image",
    "crop_to_heatmap",
    "heatmap_to_crop",
    "image_to_heatmap",
    "heatmap_to_image",
]

CONVENTIONS = ("standard", "udp")


def _check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention


def _size_pair(size: Sequence[float], name: str) -> tuple[float, float]:
    try:
        w, h = (float(v) for v in size)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (w, h) of numbers, got {size!r}") from None
    if not (w > 0 and h > 0):
        raise ValueError(f"{name} must be positive (w, h), got {tuple(size)!r}")
    return w, h


# --------------------------------------------------------------------------------------------
# Boxes
# --------------------------------------------------------------------------------------------


def bbox_xywh_to_center_scale(box, aspect_ratio: float, padding: float = 1.25):
    """Convert COCO ``[x, y, w, h]`` boxes to ``(center, scale)`` for a top-down crop.

    The box is widened or heightened to ``aspect_ratio = w / h`` (of the network input) around its
    centre, then multiplied by ``padding``. ``box`` is ``(4,)`` or ``(N, 4)``; the result has the
    matching leading shape with a last axis of 2. ``center = (x + w / 2, y + h / 2)`` (continuous
    box coordinates, as in MMPose 1.x).
    """
    if not aspect_ratio > 0:
        raise ValueError(f"aspect_ratio must be > 0, got {aspect_ratio!r}")
    if not padding > 0:
        raise ValueError(f"padding must be > 0, got {padding!r}")
    is_torch = isinstance(box, torch.Tensor)
    b = box if is_torch else np.asarray(box, dtype=np.float64)
    if b.shape[-1] != 4:
        raise ValueError(f"box must have a last axis of 4 (x, y, w, h), got shape {tuple(b.shape)}")
    x, y, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    center = (torch.stack if is_torch else np.stack)([x + w * 0.5, y + h * 0.5], -1)
    # Widen whichever side is too short so w / h == aspect_ratio.
    wider = w > aspect_ratio * h
    if is_torch:
        new_w = torch.where(wider, w, h * aspect_ratio)
        new_h = torch.where(wider, w / aspect_ratio, h)
        scale = torch.stack([new_w, new_h], -1) * padding
    else:
        new_w = np.where(wider, w, h * aspect_ratio)
        new_h = np.where(wider, w / aspect_ratio, h)
        scale = np.stack([new_w, new_h], -1) * padding
    return center, scale


# --------------------------------------------------------------------------------------------
# The two published single-box definitions (kept literally; used as references in tests)
# --------------------------------------------------------------------------------------------


def _rotate_point(point: np.ndarray, angle_rad: float) -> np.ndarray:
    sn, cs = math.sin(angle_rad), math.cos(angle_rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs])


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # The point that makes (a, b, c) a right angle at b, turned 90 degrees from a - b.
    direction = a - b
    return b + np.array([-direction[1], direction[0]])


def get_affine_transform(center, scale, rotation: float, output_size, shift=(0.0, 0.0),
                         inverse: bool = False) -> np.ndarray:
    """HRNet / SimpleBaseline ``get_affine_transform`` (scale in pixels, three-point construction).

    Maps the box (``center``, ``scale=(w, h)`` pixels, rotated by ``rotation`` degrees, shifted by
    ``shift * scale``) onto an ``output_size=(w, h)`` crop; the scale factor is taken from the
    widths, as published. Returns a ``(2, 3)`` float64 matrix (image -> crop unless ``inverse``).
    """
    import cv2

    center = np.asarray(center, dtype=np.float64)
    scale_w, _ = _size_pair(scale, "scale")
    dst_w, dst_h = _size_pair(output_size, "output_size")
    shift = np.asarray(shift, dtype=np.float64)
    rot_rad = math.radians(rotation)
    src_dir = _rotate_point(np.array([0.0, scale_w * -0.5]), rot_rad)
    dst_dir = np.array([0.0, dst_w * -0.5])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center + np.asarray(scale, dtype=np.float64) * shift
    src[1] = center + src_dir + np.asarray(scale, dtype=np.float64) * shift
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    if inverse:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def get_warp_matrix(theta: float, size_input, size_dst, size_target) -> np.ndarray:
    """UDP ``get_warp_matrix`` (Huang et al.), literally as published.

    ``theta`` in degrees, ``size_input = 2 * center`` (so the box centre is the "input centre"),
    ``size_dst = output_size - 1``, ``size_target = scale`` (box size in pixels). Note the published
    rotation sign is the opposite of :func:`get_affine_transform`'s; :func:`crop_matrix` calls this
    with ``theta = -rotation`` so both conventions share one rotation sign.
    """
    theta = math.radians(theta)
    cos, sin = math.cos(theta), math.sin(theta)
    scale_x = size_dst[0] / size_target[0]
    scale_y = size_dst[1] / size_target[1]
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[0, 0] = cos * scale_x
    matrix[0, 1] = -sin * scale_x
    matrix[0, 2] = scale_x * (-0.5 * size_input[0] * cos + 0.5 * size_input[1] * sin
                              + 0.5 * size_target[0])
    matrix[1, 0] = sin * scale_y
    matrix[1, 1] = cos * scale_y
    matrix[1, 2] = scale_y * (-0.5 * size_input[0] * sin - 0.5 * size_input[1] * cos
                              + 0.5 * size_target[1])
    return matrix


# --------------------------------------------------------------------------------------------
# Batched closed forms (numpy or torch); these are what the data pipeline uses
# --------------------------------------------------------------------------------------------


def _as_batch(value, like, name: str, last: int | None):
    """Turn ``value`` into an array of the same kind/dtype as ``like`` (numpy float64 by default)."""
    if isinstance(like, torch.Tensor):
        out = torch.as_tensor(value, dtype=like.dtype if like.is_floating_point() else torch.float64,
                              device=like.device)
    else:
        out = np.asarray(value, dtype=np.float64)
    if last is not None and (out.ndim == 0 or out.shape[-1] != last):
        raise ValueError(f"{name} must have a last axis of {last}, got shape {tuple(out.shape)}")
    return out


def crop_matrix(center, scale, rotation, output_size, convention: str = "udp"):
    """Image -> crop affine matrices for boxes ``center (..., 2)``, ``scale (..., 2)``.

    ``rotation`` is degrees, scalar or ``(...)``; ``output_size`` is ``(w, h)``. Returns
    ``(..., 2, 3)`` in the array kind of ``center``. For one box this equals
    :func:`get_affine_transform` (``"standard"``, box with the output's aspect ratio) or
    ``get_warp_matrix(-rotation, 2 * center, output_size - 1, scale)`` (``"udp"``). Unlike the
    published standard form, each axis uses its own scale factor, which is the same thing when
    the box has the output's aspect ratio (as :func:`bbox_xywh_to_center_scale` makes it).
    """
    _check_convention(convention)
    out_w, out_h = _size_pair(output_size, "output_size")
    is_torch = isinstance(center, torch.Tensor)
    c = _as_batch(center, center, "center", 2)
    s = _as_batch(scale, c, "scale", 2)
    r = _as_batch(rotation, c, "rotation", None)
    xp = torch if is_torch else np
    if convention == "standard":
        span_w, span_h = out_w, out_h
    else:
        span_w, span_h = out_w - 1.0, out_h - 1.0
    sx = span_w / s[..., 0]
    sy = span_h / s[..., 1]
    rad = r * (math.pi / 180.0)
    cos, sin = xp.cos(rad), xp.sin(rad)
    # Linear part diag(sx, sy) @ R(-rotation), with R(-a) = [[cos, sin], [-sin, cos]].
    a00, a01 = sx * cos, sx * sin
    a10, a11 = -sy * sin, sy * cos
    cx, cy = c[..., 0], c[..., 1]
    t0 = span_w * 0.5 - (a00 * cx + a01 * cy)
    t1 = span_h * 0.5 - (a10 * cx + a11 * cy)
    parts = [a00, a01, t0, a10, a11, t1]
    parts = torch.broadcast_tensors(*parts) if is_torch else np.broadcast_arrays(*parts)
    return xp.stack([xp.stack(parts[:3], -1), xp.stack(parts[3:], -1)], -2)


def heatmap_scale(input_size, heatmap_size, convention: str = "udp") -> tuple[float, float]:
    """Per-axis factor ``(kx, ky)`` from input-crop pixels to heatmap pixels (no offset).

    ``"standard"``: ``heatmap / input`` (i.e. ``1 / stride``); ``"udp"``:
    ``(heatmap - 1) / (input - 1)``. Sizes are ``(w, h)``.
    """
    _check_convention(convention)
    in_w, in_h = _size_pair(input_size, "input_size")
    hm_w, hm_h = _size_pair(heatmap_size, "heatmap_size")
    if convention == "standard":
        return hm_w / in_w, hm_h / in_h
    if in_w < 2 or in_h < 2:
        raise ValueError(f"udp needs input_size >= 2 on both axes, got {(in_w, in_h)}")
    return (hm_w - 1.0) / (in_w - 1.0), (hm_h - 1.0) / (in_h - 1.0)


def flip_matrix(width: float, like=None):
    """Horizontal flip of a ``width``-pixel-wide image under the pixel-centre rule: ``x' = w-1-x``."""
    m = np.array([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0]])
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(m, dtype=like.dtype, device=like.device)
    return m


def compose_affine(second, first):
    """The affine ``x -> second(first(x))`` for ``(..., 2, 3)`` matrices (numpy or torch)."""
    xp = torch if isinstance(first, torch.Tensor) or isinstance(second, torch.Tensor) else np
    if xp is torch:
        first, second = torch.as_tensor(first), torch.as_tensor(second)
        second = second.to(first.dtype)
    a2, t2 = second[..., :2], second[..., 2:]
    a1, t1 = first[..., :2], first[..., 2:]
    return xp.concatenate([a2 @ a1, a2 @ t1 + t2], -1) if xp is np else torch.cat([a2 @ a1, a2 @ t1 + t2], -1)


def invert_affine(matrix):
    """Inverse of ``(..., 2, 3)`` affine matrices (numpy or torch)."""
    if isinstance(matrix, torch.Tensor):
        a, t = matrix[..., :2], matrix[..., 2:]
        inv = torch.linalg.inv(a)
        return torch.cat([inv, -inv @ t], -1)
    m = np.asarray(matrix, dtype=np.float64)
    a, t = m[..., :2], m[..., 2:]
    inv = np.linalg.inv(a)
    return np.concatenate([inv, -inv @ t], -1)


def transform_points(points, matrix):
    """Apply ``(..., 2, 3)`` affine matrices to points ``(..., K, 2)`` (numpy or torch).

    The matrix's leading axes broadcast against the points' leading axes (a single ``(2, 3)``
    matrix applies to everything).
    """
    if isinstance(points, torch.Tensor):
        m = torch.as_tensor(matrix, dtype=points.dtype, device=points.device)
        return points @ m[..., :2].transpose(-1, -2) + m[..., None, :, 2]
    p = np.asarray(points)
    m = np.asarray(matrix, dtype=np.float64)
    dtype = p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64
    out = p.astype(np.float64) @ np.swapaxes(m[..., :2], -1, -2) + m[..., None, :, 2]
    return out.astype(dtype, copy=False)


def image_to_heatmap_matrix(center, scale, rotation, input_size, heatmap_size,
                            convention: str = "udp", flipped=False):
    """Image -> heatmap matrices ``(..., 2, 3)``: crop, optional horizontal flip of the crop,
    then the convention's heatmap scaling. Sizes are ``(w, h)``; ``flipped`` is a bool or a
    boolean array ``(...)`` (per box)."""
    m = crop_matrix(center, scale, rotation, input_size, convention)
    is_torch = isinstance(m, torch.Tensor)
    flip = flip_matrix(_size_pair(input_size, "input_size")[0], m)
    flipped_arr = torch.as_tensor(flipped, device=m.device) if is_torch else np.asarray(flipped)
    if flipped_arr.ndim == 0 and not bool(flipped_arr):
        pass
    else:
        fm = compose_affine(flip, m)
        mask = flipped_arr[..., None, None]
        m = torch.where(mask, fm, m) if is_torch else np.where(mask, fm, m)
    kx, ky = heatmap_scale(input_size, heatmap_size, convention)
    k = np.array([[kx, 0.0, 0.0], [0.0, ky, 0.0]])
    k = torch.as_tensor(k, dtype=m.dtype, device=m.device) if is_torch else k
    return compose_affine(k, m)


# --------------------------------------------------------------------------------------------
# Point mappings
# --------------------------------------------------------------------------------------------


def image_to_crop(points, center, scale, rotation, input_size, convention: str = "udp"):
    """Image pixels -> input-crop pixels. ``points (..., K, 2)``, boxes ``(..., 2)``."""
    return transform_points(points, crop_matrix(center, scale, rotation, input_size, convention))


def crop_to_image(points, center, scale, rotation, input_size, convention: str = "udp"):
    """Input-crop pixels -> image pixels (inverse of :func:`image_to_crop`)."""
    m = crop_matrix(center, scale, rotation, input_size, convention)
    return transform_points(points, invert_affine(m))


def crop_to_heatmap(points, input_size, heatmap_size, convention: str = "udp"):
    """Input-crop pixels -> heatmap pixels (a per-axis scaling, see :func:`heatmap_scale`)."""
    kx, ky = heatmap_scale(input_size, heatmap_size, convention)
    k = np.array([kx, ky])
    if isinstance(points, torch.Tensor):
        return points * torch.as_tensor(k, dtype=points.dtype, device=points.device)
    return (np.asarray(points) * k).astype(np.result_type(np.asarray(points).dtype, np.float32))


def heatmap_to_crop(points, input_size, heatmap_size, convention: str = "udp"):
    """Heatmap pixels -> input-crop pixels."""
    kx, ky = heatmap_scale(input_size, heatmap_size, convention)
    k = np.array([1.0 / kx, 1.0 / ky])
    if isinstance(points, torch.Tensor):
        return points * torch.as_tensor(k, dtype=points.dtype, device=points.device)
    return (np.asarray(points) * k).astype(np.result_type(np.asarray(points).dtype, np.float32))


def image_to_heatmap(points, center, scale, rotation, input_size, heatmap_size,
                     convention: str = "udp", flipped=False):
    """Image pixels -> heatmap pixels in one affine (crop, optional flip, heatmap scaling)."""
    m = image_to_heatmap_matrix(center, scale, rotation, input_size, heatmap_size, convention,
                                flipped)
    return transform_points(points, m)


def heatmap_to_image(points, center, scale, rotation, input_size, heatmap_size,
                     convention: str = "udp", flipped=False):
    """Heatmap pixels -> image pixels: the inverse of :func:`image_to_heatmap`.

    This is what evaluation uses to put decoded keypoints back into the original image, with the
    ``meta`` ``center``, ``scale``, ``rotation`` and ``flipped`` of each sample.
    """
    m = image_to_heatmap_matrix(center, scale, rotation, input_size, heatmap_size, convention,
                                flipped)
    return transform_points(points, invert_affine(m))
