"""A generated set of COCO-sized JPEG photos with person boxes and keypoints, for loader benchmarks.

640x480 JPEGs at quality 90 whose textured content (several octaves of smooth noise plus fine
grain) compresses to about COCO's average file size, with 1-4 people per image whose box heights
follow a log-normal fitted by eye to COCO keypoint instances (median ~150 px, clipped to the
image) and 17 keypoints placed on a standing-person template inside each box. Deterministic in
``seed``; written into a cache directory, never into the repository.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

WIDTH, HEIGHT, QUALITY = 640, 480, 90
# Standing person, facing the camera: (x, y) of the 17 COCO keypoints in a unit box.
_TEMPLATE = np.array([
    [0.50, 0.06], [0.54, 0.04], [0.46, 0.04], [0.58, 0.06], [0.42, 0.06],   # nose, eyes, ears
    [0.68, 0.20], [0.32, 0.20], [0.78, 0.38], [0.22, 0.38], [0.82, 0.54],   # shoulders .. wrists
    [0.18, 0.54], [0.62, 0.55], [0.38, 0.55], [0.64, 0.77], [0.36, 0.77],   # hips, knees
    [0.65, 0.97], [0.35, 0.97]])                                              # ankles


def coco_sample_root() -> Path | None:
    """The real coco_sample set beside the loader benchmarks' generated one: ``$KPFAST_COCO_SAMPLE``,
    else ``<repo>/../shared/data/coco_sample`` (or one level further up, for a worktree); None if absent."""
    env = os.environ.get("KPFAST_COCO_SAMPLE")
    repo = Path(__file__).resolve().parents[1]
    for candidate in ([Path(env)] if env else [repo.parent / "shared/data/coco_sample",
                                               repo.parent.parent / "shared/data/coco_sample"]):
        if (candidate / "annotations/person_keypoints_val2017.json").is_file():
            return candidate
    return None


def _texture(rng: np.random.Generator) -> np.ndarray:
    img = np.zeros((HEIGHT, WIDTH, 3), np.float32)
    for cells, amp in ((4, 70.0), (16, 40.0), (64, 25.0), (160, 12.0)):
        small = rng.normal(0, 1, (cells * 3 // 4 + 1, cells + 1, 3)).astype(np.float32)
        img += amp * cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 17.0, img.shape).astype(np.float32)  # sensor grain: COCO-like file sizes
    return np.clip(img + rng.uniform(60, 190, 3).astype(np.float32), 0, 255).astype(np.uint8)


def _person(rng: np.random.Generator):
    h = float(np.clip(rng.lognormal(np.log(150.0), 0.6), 30.0, HEIGHT - 2.0))
    w = float(np.clip(h * rng.uniform(0.35, 0.7), 10.0, WIDTH - 2.0))
    x = float(rng.uniform(0, WIDTH - w))
    y = float(rng.uniform(0, HEIGHT - h))
    pts = _TEMPLATE * [w, h] + [x, y] + rng.normal(0, 0.03, _TEMPLATE.shape) * [w, h]
    v = np.where(rng.random(17) < 0.8, 2, 0)
    kps = np.concatenate([pts, v[:, None]], 1)
    kps[v == 0] = 0
    return [x, y, w, h], kps


def generate_coco_like(root: Path, num_images: int = 48, seed: int = 0) -> Path:
    """Write ``root/annotations/person_keypoints_val2017.json`` and ``root/images/val2017``."""
    rng = np.random.default_rng(seed)
    (root / "images/val2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(num_images):
        img = _texture(rng)
        people = [_person(rng) for _ in range(int(rng.integers(1, 5)))]
        for (x, y, w, h), _ in people:  # a silhouette per person, so boxes hold content
            colour = rng.uniform(0, 255, 3).tolist()
            cv2.ellipse(img, (int(x + w / 2), int(y + h / 2)), (int(w / 2), int(h / 2)), 0, 0, 360, colour, -1)
        name = f"{i:012d}.jpg"
        cv2.imwrite(str(root / "images/val2017" / name), img, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        images.append({"id": i + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        for box, kps in people:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 1,
                                "bbox": box, "area": box[2] * box[3], "iscrowd": 0,
                                "num_keypoints": int((kps[:, 2] > 0).sum()),
                                "keypoints": kps.reshape(-1).round(2).tolist()})
    category = {"id": 1, "name": "person", "supercategory": "person",
                "keypoints": ["nose", "left_eye", "right_eye", "left_ear", "right_ear",
                              "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
                              "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                              "right_knee", "left_ankle", "right_ankle"],
                "skeleton": []}
    data = {"images": images, "annotations": annotations, "categories": [category]}
    (root / "annotations/person_keypoints_val2017.json").write_text(json.dumps(data))
    return root


def ensure_coco_like(num_images: int = 48, seed: int = 0) -> Path:
    """The generated set under the temp dir (``$KPFAST_BENCH_CACHE`` overrides), built once."""
    base = Path(os.environ.get("KPFAST_BENCH_CACHE", Path(tempfile.gettempdir()) / "kpfast-bench"))
    root = base / f"coco_like-v1-{num_images}-{seed}"
    if not (root / "annotations/person_keypoints_val2017.json").is_file():
        generate_coco_like(root, num_images, seed)
    return root
