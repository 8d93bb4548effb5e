"""Image-level helpers of the top-down pipeline: decoding, affine crop, normalisation (whose one
definition is kpfast/data/normalize.py).

:func:`read_image_checked` is the one reader of user images (training, evaluation, predict,
the data tools). Its orientation rule: images are decoded **in the file's stored pixel frame**;
an EXIF orientation tag is ignored, because COCO annotations (and the sizes in their ``images``
entries) are in that frame (docs/data.md, "Image orientation").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import kpfast._require_trainer  # noqa: F401  (first: one line when the trainer's packages are missing)
import cv2
import numpy as np
import torch

from . import normalize
from .jpeg import decode_flags, is_jpeg

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "DEFAULT_MAX_IMAGE_PIXELS", "decode_image",
           "read_image_checked", "read_image_reduced", "read_jpeg_bytes_checked", "image_size_from_header",
           "warp_crop", "to_chw", "normalize_image", "denormalize_image"]

# Largest image decoded by default (64 Mpx, ~200 MB as BGR): 3x a 4K x 4K photograph, far above
# COCO's 640 px images, far below what a decompression bomb asks for.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
# Largest image file read (a 64 Mpx PNG compresses to far less).
MAX_IMAGE_FILE_BYTES = 512 * 2**20
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_NO_LENGTH = {0x01, 0xD8} | set(range(0xD0, 0xD8))

IMAGENET_MEAN = np.array(normalize.IMAGENET_MEAN, dtype=np.float32)
IMAGENET_STD = np.array(normalize.IMAGENET_STD, dtype=np.float32)


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOFn segment of a JPEG, without decoding."""
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_NO_LENGTH:
            pos += 2
            continue
        length = int.from_bytes(head[pos + 2:pos + 4], "big")
        if marker in _JPEG_SOF:
            if pos + 9 > len(head):
                return None
            height = int.from_bytes(head[pos + 5:pos + 7], "big")
            width = int.from_bytes(head[pos + 7:pos + 9], "big")
            return width, height
        if marker == 0xDA or length < 2:  # scan data before any frame header
            return None
        pos += 2 + length
    return None


def image_size_from_header(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """``(width, height)`` read from the header of a JPEG, PNG, BMP or WebP file, or ``None``.

    Only the header is parsed (OpenCV cannot report a size without decoding), so the size of an
    image can be checked before decoding allocates its pixels.
    """
    # A view, not a copy: a JPEG's frame header may follow large EXIF/ICC segments.
    head = memoryview(np.ascontiguousarray(np.frombuffer(data, np.uint8) if isinstance(data, bytes)
                                           else data, dtype=np.uint8)).cast("B")
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(head)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] == b"BM" and len(head) >= 26:
        if int.from_bytes(head[14:18], "little") == 12:  # OS/2 BITMAPCOREHEADER
            return int.from_bytes(head[18:20], "little"), int.from_bytes(head[20:22], "little")
        return (abs(int.from_bytes(head[18:22], "little", signed=True)),
                abs(int.from_bytes(head[22:26], "little", signed=True)))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        chunk = head[12:16]
        if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
            return (int.from_bytes(head[26:28], "little") & 0x3FFF,
                    int.from_bytes(head[28:30], "little") & 0x3FFF)
        if chunk == b"VP8L" and head[20] == 0x2F:
            bits = int.from_bytes(head[21:25], "little")
            return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        if chunk == b"VP8X":
            return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _read_regular_file(path) -> tuple[np.ndarray | None, str]:
    """The bytes of ``path`` when it is a regular file of bounded size: ``(data, "")`` or
    ``(None, reason)``. Opened non-blocking and checked with fstat, so a FIFO never blocks."""
    try:
        fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as err:
        return None, f"cannot read the file ({err.strerror or err})"
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file (a FIFO, device or directory)"
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            return None, f"file of {info.st_size / 2**20:.0f} MiB exceeds {MAX_IMAGE_FILE_BYTES / 2**20:.0f} MiB"
        # Read into a buffer of the size fstat gave plus one byte (to see growth): asking for the
        # cap instead makes CPython allocate and shrink a buffer of the cap, ~100 us per file.
        buffer = bytearray(info.st_size + 1)
        view, filled = memoryview(buffer), 0
        with os.fdopen(fd, "rb", buffering=0) as handle:
            fd = None
            while filled < len(buffer):  # a network file system may return short reads
                got = handle.readinto(view[filled:])
                if not got:
                    break
                filled += got
        if filled > info.st_size:
            return None, f"the file grew while it was read (fstat said {info.st_size} bytes)"
        return np.frombuffer(buffer, dtype=np.uint8, count=filled), ""
    except OSError as err:
        return None, f"cannot read the file ({err.strerror or err})"
    finally:
        if fd is not None:
            os.close(fd)


def read_image_checked(path: str | Path, expected_size: tuple[float, float] | None = None,
                       max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray | None, str]:
    """Read an image as ``(H, W, 3)`` uint8 **BGR**: ``(image, "")`` or ``(None, reason)``.

    :func:`read_image_reduced` with no reduction; its checks are described here.

    Before decoding, the size in the file's header is read and the image refused when it has
    more than ``max_pixels`` pixels, or when it differs from ``expected_size = (width, height)``
    (the annotation's ``width``, ``height``: the stored frame, since decoding ignores EXIF
    orientation), so a small file that expands to gigabytes (a decompression bomb) is never
    decoded. Only regular files are read (a FIFO, device or directory is refused without
    blocking), at most :data:`MAX_IMAGE_FILE_BYTES`. Formats whose header
    kpfast cannot read (anything but JPEG, PNG, BMP, WebP) are refused for the same reason.
    A JPEG without its end-of-image marker counts as undecodable: OpenCV would return it with
    the missing part filled in grey, i.e. a silently damaged image.
    """
    image, reason, _factor = read_image_reduced(path, expected_size, max_pixels, 1)
    return image, reason


def read_image_reduced(path: str | Path, expected_size: tuple[float, float] | None = None,
                       max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, reduction: int = 1
                       ) -> tuple[np.ndarray | None, str, int]:
    """:func:`read_image_checked` decoding a JPEG at ``1 / reduction`` of its size in the DCT
    domain (:mod:`kpfast.data.jpeg`): ``(image, reason, factor)`` with ``factor`` the reduction
    applied (1 for other formats, which are always decoded in full). The size checks use the
    header's full size, before any decoding.
    """
    data, reason = _read_regular_file(path)
    if data is None:
        return None, reason, 1
    factor = reduction if is_jpeg(data) else 1
    image, reason = _checked_decode(data, expected_size, max_pixels, factor)
    return image, reason, factor


def _header_problem(data: np.ndarray, expected_size, max_pixels: int) -> str:
    """Why the file must not be decoded (the checks of :func:`read_image_checked`), or ``""``."""
    if data.size < 4:
        return f"file too short ({data.size} bytes)"
    size = image_size_from_header(data)
    if size is None:
        return "no readable JPEG/PNG/BMP/WebP header"
    width, height = size
    if width <= 0 or height <= 0:
        return f"header gives an empty size {width}x{height}"
    if width * height > max_pixels:
        return (f"header size {width}x{height} = {width * height / 1e6:.4g} Mpx exceeds "
                f"max_image_pixels = {max_pixels / 1e6:g} Mpx (not decoded)")
    if expected_size is not None:
        ew, eh = (int(round(v)) for v in expected_size)
        if (width, height) != (ew, eh):
            return f"header size {width}x{height} differs from the annotation's {ew}x{eh} (not decoded)"
    if data[0] == 0xFF and data[1] == 0xD8 and b"\xff\xd9" not in data[-1024:].tobytes():
        return "truncated JPEG (no end-of-image marker)"
    return ""


def read_jpeg_bytes_checked(path: str | Path, expected_size: tuple[float, float] | None = None,
                            max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[np.ndarray | None, str]:
    """The encoded bytes of a JPEG that passes :func:`read_image_checked`'s header checks, not
    decoded (the device decodes it: docs/design.md §Performance): ``(bytes, "")`` or
    ``(None, reason)``. Other formats are refused: nvJPEG decodes JPEGs only."""
    data, reason = _read_regular_file(path)
    if data is None:
        return None, reason
    reason = _header_problem(data, expected_size, max_pixels)
    if not reason and not is_jpeg(data):
        reason = "not a JPEG (data.decode_device: cuda decodes JPEGs only)"
    return (None, reason) if reason else (data, "")


def _checked_decode(data: np.ndarray, expected_size, max_pixels: int, reduction: int):
    """The header checks of :func:`read_image_checked`, then the decode."""
    reason = _header_problem(data, expected_size, max_pixels)
    if reason:
        return None, reason
    image = cv2.imdecode(data, decode_flags(reduction))
    if image is None or image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        return None, "OpenCV cannot decode it"
    return image, ""


def decode_image(path: str | Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray | None:
    """:func:`read_image_checked` without an expected size: the image, or ``None``."""
    return read_image_checked(path, None, max_pixels)[0]


def warp_crop(image: np.ndarray, matrix: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """The affine crop: ``cv2.warpAffine`` with bilinear sampling and black borders."""
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (int(size_wh[0]), int(size_wh[1])),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def to_chw(rgb: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 RGB -> the ``(3, H, W)`` uint8 tensor a sample carries (normalised
    on the device by :func:`kpfast.data.normalize.prepare_images`)."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1)))


def normalize_image(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB -> ``(3, H, W)`` float32 normalised with ImageNet mean/std, on the
    CPU (:func:`kpfast.data.normalize.normalize_images`)."""
    return normalize.normalize_images(to_chw(rgb)).numpy()


def denormalize_image(chw: np.ndarray) -> np.ndarray:
    """Inverse of :func:`normalize_image`: ``(3, H, W)`` float -> ``(H, W, 3)`` uint8 RGB."""
    chw = np.asarray(chw, dtype=np.float32)
    rgb = chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
