"""Reduced-resolution JPEG decoding for top-down crops (docs/design.md §Performance).

A top-down sample needs the person's box at the network's resolution only. libjpeg (through
OpenCV's ``IMREAD_REDUCED_COLOR_{2,4,8}``) can decode a JPEG at 1/2, 1/4 or 1/8 of its size in
the DCT domain, skipping most of the inverse transform and the colour upsampling: when the box
spans at least ``factor * margin`` source pixels per output pixel along both axes, the reduced
image still holds at least as much detail as the warp to the output size can use.

Pixel centres: OpenCV's reduced decode averages ``factor x factor`` blocks, so reduced pixel
``j`` (kpfast's rule: pixel ``j`` at ``x = j``) sits at full-resolution ``x = factor * j +
(factor - 1) / 2`` (measured in tests/data/test_jpeg.py on a sub-pixel Gaussian blob).
:func:`reduced_matrix` composes the crop matrix with that map, so keypoints, targets and the
crop's matrix stay those of the full-resolution image exactly; only the pixels are resampled
from the reduced image.
"""

from __future__ import annotations

import kpfast._require_trainer  # noqa: F401  (first: one line when the trainer's packages are missing)
import cv2
import numpy as np

__all__ = ["REDUCTION_FACTORS", "DEFAULT_REDUCTION_MARGIN", "decode_flags", "reduction_for_scale",
           "reduced_matrix", "is_jpeg"]

REDUCTION_FACTORS = (8, 4, 2)
# The reduced image must have at least this many pixels per output pixel. 1.0: never fewer
# source pixels than the crop has; the tests state the resulting difference to the full path.
DEFAULT_REDUCTION_MARGIN = 1.0
_IGNORE_ORIENTATION = cv2.IMREAD_IGNORE_ORIENTATION  # see transforms.py: stored pixel frame
_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
          8: cv2.IMREAD_REDUCED_COLOR_8}


def decode_flags(factor: int) -> int:
    """OpenCV ``imdecode`` flags decoding at ``1 / factor`` of the size, stored orientation."""
    if factor not in _FLAGS:
        raise ValueError(f"reduction factor must be one of {sorted(_FLAGS)}, got {factor!r}")
    return _FLAGS[factor] | _IGNORE_ORIENTATION


def is_jpeg(data: np.ndarray) -> bool:
    """Reduced decoding is a DCT-domain operation: only JPEGs get it (OpenCV resizes others)."""
    return data.size >= 2 and data[0] == 0xFF and data[1] == 0xD8


def reduction_for_scale(scale, output_wh, margin: float = DEFAULT_REDUCTION_MARGIN) -> int:
    """The largest factor in 8, 4, 2 (else 1) whose reduced image keeps ``margin`` pixels per
    output pixel: ``scale / (output * factor) >= margin`` along both axes."""
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin!r}")
    ratio = min(float(scale[0]) / float(output_wh[0]), float(scale[1]) / float(output_wh[1]))
    for factor in REDUCTION_FACTORS:
        if ratio >= factor * margin:
            return factor
    return 1


def reduced_matrix(matrix: np.ndarray, factor: int) -> np.ndarray:
    """The image -> crop ``matrix`` re-expressed on the ``1 / factor`` decode: ``matrix @ U``
    with ``U`` mapping reduced pixel ``j`` to full-resolution ``factor * j + (factor - 1) / 2``."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if factor == 1:
        return matrix
    offset = (factor - 1) / 2.0
    out = matrix.copy()
    out[:, :2] = matrix[:, :2] * factor
    out[:, 2] = matrix[:, 2] + offset * (matrix[:, 0] + matrix[:, 1])
    return out
