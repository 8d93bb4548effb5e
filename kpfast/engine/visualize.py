"""Drawing poses: skeleton overlays (OpenCV) and the validation prediction grid."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

__all__ = ["draw_pose", "image_grid", "save_prediction_grid", "write_image"]

PRED_COLOR = (0, 200, 255)  # BGR orange
GT_COLOR = (80, 220, 80)  # BGR green


def draw_pose(
    image: np.ndarray,
    keypoints: np.ndarray,
    skeleton: Sequence[Sequence[int]],
    score_threshold: float = 0.2,
    color: tuple[int, int, int] = PRED_COLOR,
    radius: int | None = None,
    thickness: int | None = None,
) -> np.ndarray:
    """Draw keypoints (K, 3 = x, y, score/visibility) and skeleton limbs on a BGR uint8 image copy.

    Keypoints scoring at or below ``score_threshold`` (or non-finite) are not drawn, nor limbs
    touching them.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got {image.shape} {image.dtype}")
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.ndim != 2 or keypoints.shape[1] != 3:
        raise ValueError(f"keypoints: expected (K, 3), got {keypoints.shape}")
    out = image.copy()
    scale = max(out.shape[:2]) / 256.0
    radius = radius or max(1, int(round(2.5 * scale)))
    thickness = thickness or max(1, int(round(1.5 * scale)))
    ok = np.isfinite(keypoints).all(axis=1) & (keypoints[:, 2] > score_threshold)
    for a, b in skeleton:
        if a < len(keypoints) and b < len(keypoints) and ok[a] and ok[b]:
            pa = tuple(int(round(v)) for v in keypoints[a, :2])
            pb = tuple(int(round(v)) for v in keypoints[b, :2])
            cv2.line(out, pa, pb, color, thickness, cv2.LINE_AA)
    for k in np.flatnonzero(ok):
        centre = tuple(int(round(v)) for v in keypoints[k, :2])
        cv2.circle(out, centre, radius, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, centre, radius, color, max(1, thickness // 2), cv2.LINE_AA)
    return out


def _label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def image_grid(tiles: Sequence[np.ndarray], columns: int, pad: int = 4) -> np.ndarray:
    """Tiles of equal size laid out row-major on a dark background."""
    if not tiles:
        raise ValueError("tiles: expected at least one image")
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 32, np.uint8)
    for i, tile in enumerate(tiles):
        if tile.shape[:2] != (h, w):
            raise ValueError(f"tiles: tile {i} has size {tile.shape[:2]}, expected {(h, w)}")
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = tile
    return grid


def write_image(path: Path | str, image: np.ndarray) -> None:
    """Encode with OpenCV (format from the suffix) and write atomically."""
    from kpfast.outputs import atomic_write_bytes

    path = Path(path)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"path: OpenCV cannot encode an image as {path.suffix!r}")
    atomic_write_bytes(path, encoded.tobytes())


def save_prediction_grid(model, dataset, config, device, dataset_info, path, num_samples: int = 8) -> Path:
    """Validation crops with the predicted skeleton (left) beside the ground truth (right)."""
    from kpfast.data import collate_samples
    from kpfast.inference import Predictor

    count = min(num_samples, len(dataset))
    if count == 0:
        raise ValueError("dataset: empty, nothing to visualise")
    # Evenly spread samples, deterministic.
    indices = np.linspace(0, len(dataset) - 1, count).round().astype(int).tolist()
    batch = collate_samples([dataset[i] for i in indices])
    predictor = Predictor.from_config(config, model, device, dataset_info.flip_pairs)
    prediction = predictor.predict_crops(batch["image"], space="crop")
    pred_crop, scores = prediction.coords, prediction.scores
    gt_crop = predictor.codec.heatmap_to_crop(batch["keypoints"].double().numpy())
    gt_vis = batch["weights"].double().numpy()
    # The samples' uint8 RGB (3, H, W) crops -> BGR (H, W, 3) images for OpenCV drawing.
    crops = [np.ascontiguousarray(image.permute(1, 2, 0).numpy()[:, :, ::-1]) for image in batch["image"]]
    tiles = []
    threshold = config.eval.keypoint_score_threshold
    for i in range(count):
        pred = np.concatenate([pred_crop[i], scores[i][:, None]], axis=1)
        gt = np.concatenate([gt_crop[i], gt_vis[i][:, None]], axis=1)
        tiles.append(_label(draw_pose(crops[i], pred, dataset_info.skeleton, threshold, PRED_COLOR), "pred"))
        tiles.append(_label(draw_pose(crops[i], gt, dataset_info.skeleton, 0.5, GT_COLOR), "gt"))
    grid = image_grid(tiles, columns=min(8, 2 * count))
    if grid.shape[0] < 600:  # small crops: enlarge for viewing
        grid = cv2.resize(grid, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    write_image(path, grid)
    return Path(path)
