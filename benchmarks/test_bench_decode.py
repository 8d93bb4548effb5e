"""Decoding: kpfast backends against the reference (eager and torch.compile) and against the
per-map numpy + OpenCV loop users run today (MMPose's decode: argmax, cv2.GaussianBlur per map,
a Taylor step per keypoint in Python).

Minimal traffic (the roofline): decoding and soft-argmax forward read the maps once,
B*K*H*W*itemsize bytes; soft-argmax forward+backward reads them twice and writes the gradient
once (3x). The numpy + OpenCV loop runs on CPU only and with few rounds (it is slow).
"""

import itertools

import cv2
import numpy as np
import pytest
import torch

from conftest import implementations
from kpfast.ops import decode_heatmaps, soft_argmax
from kpfast.reference import decode as reference

K = 17
CASES = [(32, (64, 48)), (256, (64, 48)), (32, (96, 72)), (256, (96, 72))]
CASE_IDS = [f"B{b}-{h}x{w}" for b, (h, w) in CASES]
METHODS = ("argmax", "quarter", "dark", "udp", "local_mean")
_compiled = {}


def _maps(batch, size, device, dtype=torch.float32):
    """Network-like maps: a Gaussian per keypoint at a random sub-pixel centre, plus noise."""
    generator = torch.Generator().manual_seed(0)
    height, width = size
    centres = torch.rand(batch, K, 2, generator=generator) * torch.tensor([width - 1.0, height - 1.0])
    sigma = 2.0 * (height / 64)
    cols, rows = torch.arange(width, dtype=torch.float32), torch.arange(height, dtype=torch.float32)
    d2 = (cols - centres[..., :1, None]) ** 2 + (rows[:, None] - centres[..., 1:, None]) ** 2
    maps = torch.exp(-d2 / (2 * sigma**2)) + 0.02 * torch.rand(batch, K, height, width, generator=generator)
    return maps.to(device=device, dtype=dtype)


def _opencv_blur(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """MMPose's gaussian_blur: zero-pad, cv2.GaussianBlur, rescale to the original maximum."""
    border = (kernel - 1) // 2
    num, height, width = heatmaps.shape
    out = np.empty_like(heatmaps)
    for k in range(num):
        original_max = heatmaps[k].max()
        padded = np.zeros((height + 2 * border, width + 2 * border), dtype=np.float32)
        padded[border:border + height, border:border + width] = heatmaps[k]
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:border + height, border:border + width]
        out[k] = blurred * (original_max / blurred.max())
    return out


def numpy_opencv_decode(heatmaps: np.ndarray, method: str, blur_kernel: int = 11):
    """(B, K, H, W) float32 -> coords (B, K, 2), scores: the per-map loop as MMPose runs it."""
    batch, num, height, width = heatmaps.shape
    flat = heatmaps.reshape(batch, num, -1)
    index = np.argmax(flat, axis=2)
    scores = np.take_along_axis(flat, index[..., None], axis=2)[..., 0]
    coords = np.stack([index % width, index // width], axis=-1).astype(np.float32)
    coords[scores <= 0] = -1
    for b in range(batch):
        hm = heatmaps[b]
        if method in ("dark", "udp"):
            blurred = _opencv_blur(hm.copy(), blur_kernel)
            log = np.log(np.maximum(blurred, 1e-10) if method == "dark" else np.clip(blurred, 1e-3, 50.0))
            if method == "udp":
                log = np.pad(log, ((0, 0), (1, 1), (1, 1)), mode="edge")
        for k in range(num):
            x, y = int(coords[b, k, 0]), int(coords[b, k, 1])
            if scores[b, k] <= 0:
                continue
            if method == "quarter" and 1 < x < width - 1 and 1 < y < height - 1:
                coords[b, k] += 0.25 * np.sign([hm[k, y, x + 1] - hm[k, y, x - 1], hm[k, y + 1, x] - hm[k, y - 1, x]])
            elif method == "dark" and 1 < x < width - 2 and 1 < y < height - 2:
                h = log[k]
                g = np.array([0.5 * (h[y, x + 1] - h[y, x - 1]), 0.5 * (h[y + 1, x] - h[y - 1, x])])
                dxx = 0.25 * (h[y, x + 2] - 2 * h[y, x] + h[y, x - 2])
                dxy = 0.25 * (h[y + 1, x + 1] - h[y - 1, x + 1] - h[y + 1, x - 1] + h[y - 1, x - 1])
                dyy = 0.25 * (h[y + 2, x] - 2 * h[y, x] + h[y - 2, x])
                if dxx * dyy - dxy**2 != 0:
                    coords[b, k] -= np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ g
            elif method == "udp":
                h, yy, xx = log[k], y + 1, x + 1
                g = np.array([0.5 * (h[yy, xx + 1] - h[yy, xx - 1]), 0.5 * (h[yy + 1, xx] - h[yy - 1, xx])])
                dxx = h[yy, xx + 1] - 2 * h[yy, xx] + h[yy, xx - 1]
                dyy = h[yy + 1, xx] - 2 * h[yy, xx] + h[yy - 1, xx]
                dxy = 0.5 * (h[yy + 1, xx + 1] - h[yy, xx + 1] - h[yy + 1, xx] + 2 * h[yy, xx] - h[yy, xx - 1]
                             - h[yy - 1, xx] + h[yy - 1, xx - 1])
                hessian = np.array([[dxx, dxy], [dxy, dyy]]) + np.finfo(np.float32).eps * np.eye(2)
                coords[b, k] -= np.linalg.inv(hessian) @ g
            elif method == "local_mean":
                w = np.maximum(hm[k, max(0, y - 1):y + 2, max(0, x - 1):x + 2], 0)
                ys, xs = np.mgrid[max(0, y - 1):min(height, y + 2), max(0, x - 1):min(width, x + 2)]
                coords[b, k] = [(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()]
    return coords, scores


def _rounds(device, batch, impl):
    if impl == "numpy-opencv":
        return 1 if batch == 256 else 3
    return 5 if device.type == "cpu" and batch == 256 else 10


DECODE_PARAMS = [(m, b, s, torch.float32) for m, (b, s) in itertools.product(METHODS, CASES)]
DECODE_PARAMS += [(m, 256, (64, 48), torch.bfloat16) for m in ("argmax", "dark", "udp")]


@pytest.mark.parametrize("impl", ["cpu", "cuda", "triton", "torch-eager", "torch-compile", "numpy-opencv"])
@pytest.mark.parametrize("method, batch, size, dtype", DECODE_PARAMS,
                         ids=[f"{m}-B{b}-{h}x{w}-{str(d)[6:]}" for m, b, (h, w), d in DECODE_PARAMS])
def test_decode(measure, device, impl, method, batch, size, dtype):
    if impl == "numpy-opencv":
        if device.type != "cpu" or dtype != torch.float32:
            pytest.skip("the numpy + OpenCV loop is measured on CPU float32 maps")
    elif impl not in implementations(device):
        pytest.skip(f"{impl} does not run on {device.type}")
    maps = _maps(batch, size, device, dtype)
    height, width = size
    if impl == "torch-eager":
        fn = lambda: reference.decode_heatmaps(maps, method, 11, 3)  # noqa: E731
    elif impl == "torch-compile":
        compiled = _compiled.setdefault("decode", torch.compile(reference.decode_heatmaps, dynamic=False))
        fn = lambda: compiled(maps, method, 11, 3)  # noqa: E731
    elif impl == "numpy-opencv":
        maps_np = maps.numpy()
        fn = lambda: numpy_opencv_decode(maps_np, method)  # noqa: E731
    else:
        fn = lambda: decode_heatmaps(maps, method, blur_kernel=11, backend=impl)  # noqa: E731
    bytes_moved = maps.numel() * maps.element_size()
    case = f"B={batch} K={K} {height}x{width} {str(dtype).replace('torch.', '')} {method}"
    measure(fn, op="decode_heatmaps", case=case, impl=impl, bytes_moved=bytes_moved,
            rounds=_rounds(device, batch, impl))


SOFT_PARAMS = [(b, s, torch.float32) for b, s in CASES] + [(256, (64, 48), torch.bfloat16)]


@pytest.mark.parametrize("impl", ["cpu", "cuda", "triton", "torch-eager", "torch-compile"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("batch, size, dtype", SOFT_PARAMS,
                         ids=[f"B{b}-{h}x{w}-{str(d)[6:]}" for b, (h, w), d in SOFT_PARAMS])
def test_soft_argmax(measure, device, impl, backward, batch, size, dtype):
    if impl not in implementations(device):
        pytest.skip(f"{impl} does not run on {device.type}")
    maps = _maps(batch, size, device, dtype).requires_grad_(backward)
    if impl == "torch-eager":
        forward = lambda: reference.soft_argmax(maps, 1.0)  # noqa: E731
    elif impl == "torch-compile":
        compiled = _compiled.setdefault("soft", torch.compile(reference.soft_argmax, dynamic=False))
        forward = lambda: compiled(maps, 1.0)  # noqa: E731
    else:
        forward = lambda: soft_argmax(maps, beta=1.0, backend=impl)  # noqa: E731

    def fn():
        coords, _ = forward()
        if backward:
            torch.autograd.grad(coords.sum(), maps)
        return coords

    height, width = size
    bytes_moved = maps.numel() * maps.element_size() * (3 if backward else 1)
    case = (f"B={batch} K={K} {height}x{width} {str(dtype).replace('torch.', '')} "
            f"{'forward+backward' if backward else 'forward'}")
    measure(fn, op="soft_argmax", case=case, impl=impl, bytes_moved=bytes_moved, rounds=_rounds(device, batch, impl))
