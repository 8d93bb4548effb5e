"""Image-level helpers of the top-down pipeline: decoding, affine crop, normalisation."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "decode_image", "warp_crop", "normalize_image",
           "denormalize_image"]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
# (x / 255 - mean) / std  ==  x * _SCALE - _OFFSET : one multiply-add per pixel.
_SCALE = (1.0 / (255.0 * IMAGENET_STD)).astype(np.float32)
_OFFSET = (IMAGENET_MEAN / IMAGENET_STD).astype(np.float32)


def decode_image(path: str | Path) -> np.ndarray | None:
    """Read an image as ``(H, W, 3)`` uint8 **BGR**, or ``None`` when it cannot be decoded.

    A JPEG without its end-of-image marker counts as undecodable: OpenCV would return it with
    the missing part filled in grey, i.e. a silently damaged image.
    """
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size < 4:
        return None
    if data[0] == 0xFF and data[1] == 0xD8 and b"\xff\xd9" not in data[-1024:].tobytes():
        return None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return None
    return image


def warp_crop(image: np.ndarray, matrix: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The affine crop: ``cv2.warpAffine`` with bilinear sampling and black borders."""
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (int(size_wh[0]), int(size_wh[1])),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 normalised with ImageNet mean/std."""
    out = np.empty((3,) + rgb.shape[:2], dtype=np.float32)
    for c in range(3):
        # Writing channel planes directly avoids a separate HWC->CHW copy.
        np.multiply(rgb[:, :, c], _SCALE[c], out=out[c], dtype=np.float32)
        out[c] -= _OFFSET[c]
    return out


def denormalize_image(chw: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize_image`: ``(3, H, W)`` float -> ``(H, W, 3)`` uint8 RGB."""
    chw = np.asarray(chw, dtype=np.float32)
    rgb = chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
