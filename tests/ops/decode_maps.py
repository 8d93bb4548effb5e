"""Heatmaps shared by the decoding tests, and an independent per-map statement of the
published decoders (numpy + OpenCV, written after HRNet's get_final_preds, DARK's taylor and
MMPose's refine_keypoints_dark / refine_keypoints_dark_udp / gaussian_blur)."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def gaussian_maps(batch, num_keypoints, height, width, seed=0, noise=0.0, device="cpu"):
    """Smooth maps: one Gaussian per map at a random sub-pixel centre (some near the borders),
    random sigma and amplitude, plus optional uniform noise."""
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, num_keypoints)
    cx = torch.rand(shape, generator=generator) * (width + 1) - 1.0
    cy = torch.rand(shape, generator=generator) * (height + 1) - 1.0
    sigma = torch.rand(shape, generator=generator) * 1.5 + 1.2
    amplitude = torch.rand(shape, generator=generator) * 0.8 + 0.3
    cols = torch.arange(width, dtype=torch.float32)
    rows = torch.arange(height, dtype=torch.float32)
    d2 = (cols - cx[..., None, None]) ** 2 + (rows[:, None] - cy[..., None, None]) ** 2
    maps = amplitude[..., None, None] * torch.exp(-d2 / (2 * sigma[..., None, None] ** 2))
    if noise:
        maps = maps + noise * (torch.rand(maps.shape, generator=generator) - 0.5)
    return maps.to(device)


def special_maps(height, width, device="cpu"):
    """Edge cases, one per map: ties, all zero, negative, peaks on borders and corners."""
    maps = []
    blank = torch.zeros(height, width)

    def with_peaks(points, base=None):
        m = (blank.clone() if base is None else base.clone())
        rows = torch.arange(height, dtype=torch.float32)[:, None]
        cols = torch.arange(width, dtype=torch.float32)
        for x, y, a in points:
            m = torch.maximum(m, a * torch.exp(-((cols - x) ** 2 + (rows - y) ** 2) / 4.5))
        return m

    maps.append(blank.clone())                                       # all zero: coords -1, score 0
    maps.append(-1.0 - torch.rand(height, width, generator=torch.Generator().manual_seed(3)))  # negative
    tie = blank.clone()
    tie[2, 7] = tie[5, 3] = tie[9, 1] = 0.8                          # ties: the first in row-major order
    maps.append(tie)
    maps.append(with_peaks([(0, 0, 1.0)]))                           # corner
    maps.append(with_peaks([(width - 1, height - 1, 0.9)]))          # opposite corner
    maps.append(with_peaks([(1, height // 2, 0.7)]))                 # 1 px from the left border
    maps.append(with_peaks([(width // 2, 1.3, 0.7)]))                # near the top border
    maps.append(with_peaks([(width - 3.2, height - 3.4, 0.7)]))      # 2 px from the far borders
    maps.append(with_peaks([(2.0, 2.0, 0.6), (width - 3.0, 5.0, 0.6)]))  # two equal peaks
    flat = torch.full((height, width), 0.5)                          # a constant map
    maps.append(flat)
    return torch.stack(maps)[None].to(device)


def published_decode(maps: np.ndarray, method: str, blur_kernel: int = 11, window: int = 3):
    """Per-map loop over (K, H, W) float32 maps -> coords (K, 2), scores (K,)."""
    num, height, width = maps.shape
    coords = np.full((num, 2), -1.0, dtype=np.float64)
    scores = np.zeros(num, dtype=np.float32)
    for k in range(num):
        hm = maps[k].astype(np.float32)
        index = int(np.argmax(hm))
        y, x = divmod(index, width)
        scores[k] = hm[y, x]
        if not hm[y, x] > 0:
            continue
        px, py = float(x), float(y)
        if method == "quarter" and 1 < x < width - 1 and 1 < y < height - 1:
            px += 0.25 * float(np.sign(hm[y, x + 1] - hm[y, x - 1]))
            py += 0.25 * float(np.sign(hm[y + 1, x] - hm[y - 1, x]))
        elif method in ("dark", "udp"):
            blurred = cv2.GaussianBlur(hm, (blur_kernel, blur_kernel), 0, borderType=cv2.BORDER_CONSTANT)
            blurred = blurred * (hm.max() / blurred.max())
            if method == "dark" and 1 < x < width - 2 and 1 < y < height - 2:
                h = np.log(np.maximum(blurred, 1e-10))
                g = np.array([0.5 * (h[y, x + 1] - h[y, x - 1]), 0.5 * (h[y + 1, x] - h[y - 1, x])])
                dxx = 0.25 * (h[y, x + 2] - 2 * h[y, x] + h[y, x - 2])
                dyy = 0.25 * (h[y + 2, x] - 2 * h[y, x] + h[y - 2, x])
                dxy = 0.25 * (h[y + 1, x + 1] - h[y - 1, x + 1] - h[y + 1, x - 1] + h[y - 1, x - 1])
                if dxx * dyy - dxy**2 != 0:
                    offset = -np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ g
                    px, py = px + offset[0], py + offset[1]
            elif method == "udp":
                h = np.pad(np.log(np.clip(blurred, 1e-3, 50.0)), 1, mode="edge")
                c = h[y + 1, x + 1]
                right, left, down, up = h[y + 1, x + 2], h[y + 1, x], h[y + 2, x + 1], h[y, x + 1]
                g = np.array([0.5 * (right - left), 0.5 * (down - up)])
                dxx = right - 2 * c + left
                dyy = down - 2 * c + up
                dxy = 0.5 * (h[y + 2, x + 2] - right - down + 2 * c - left - up + h[y, x])
                hessian = np.array([[dxx, dxy], [dxy, dyy]]) + np.finfo(np.float32).eps * np.eye(2)
                offset = -np.linalg.inv(hessian) @ g
                px, py = px + offset[0], py + offset[1]
        elif method == "local_mean":
            r = window // 2
            y0, y1, x0, x1 = max(0, y - r), min(height, y + r + 1), max(0, x - r), min(width, x + r + 1)
            w = np.maximum(hm[y0:y1, x0:x1].astype(np.float64), 0)
            yy, xx = np.mgrid[y0:y1, x0:x1]
            px, py = float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())
        coords[k] = (px, py)
    return coords, scores
