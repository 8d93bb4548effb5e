"""An independent per-map statement of the published decoders (numpy + OpenCV, written after HRNet's get_final_preds, DARK's taylor and
MMPose's refine_keypoints_dark / refine_keypoints_dark_udp / gaussian_blur)."""

from __future__ import annotations

import cv2
import numpy as np


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
