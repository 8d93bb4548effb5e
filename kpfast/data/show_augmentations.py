"""Write a grid of augmented training samples with keypoints and skeleton drawn.

    python -m kpfast.data.show_augmentations --out grid.png [--data ROOT] [--n 16]
        [--split train] [--input-size 256 192] [--augmentation aug.yaml] [--seed 0]

Without ``--data`` the embedded synthetic dataset is used. Keypoints come from the sample's
heatmap coordinates mapped back to the input crop, so the picture shows exactly what the
trainer receives; keypoints with weight 0 are not drawn.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import kpfast._require_trainer  # noqa: F401  (first: one line when the trainer's packages are missing)
import cv2
import numpy as np

from .. import geometry
from .coco import CocoKeypointDataset


def draw_sample(sample, dataset: CocoKeypointDataset) -> np.ndarray:
    """The sample's input crop (RGB uint8) with its weighted keypoints and skeleton drawn."""
    rgb = np.ascontiguousarray(sample["image"].permute(1, 2, 0).numpy())  # uint8 (3, H, W) -> (H, W, 3)
    in_h, in_w = dataset.input_size
    kps = geometry.heatmap_to_crop(sample["keypoints"].numpy(), (in_w, in_h),
                                   dataset.heatmap_size[::-1], dataset.convention)
    weights = sample["weights"].numpy()
    info = dataset.info
    left = {a for a, _ in info.flip_pairs}
    right = {b for _, b in info.flip_pairs}

    def colour(k):  # left keypoints orange, right blue, centre green (RGB)
        return (255, 140, 0) if k in left else (30, 144, 255) if k in right else (0, 220, 0)

    for a, b in info.skeleton:
        if weights[a] > 0 and weights[b] > 0:
            cv2.line(rgb, tuple(int(round(v)) for v in kps[a]), tuple(int(round(v)) for v in kps[b]),
                     colour(a if a in left or a in right else b), 1, cv2.LINE_AA)
    for k, (x, y) in enumerate(kps):
        if weights[k] > 0:
            cv2.circle(rgb, (int(round(x)), int(round(y))), 3, colour(k), -1, cv2.LINE_AA)
            cv2.circle(rgb, (int(round(x)), int(round(y))), 3, (255, 255, 255), 1, cv2.LINE_AA)
    if sample["meta"]["flipped"]:
        cv2.putText(rgb, "flip", (2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return rgb


def make_grid(images: list[np.ndarray], columns: int | None = None, pad: int = 2) -> np.ndarray:
    columns = columns or int(math.ceil(math.sqrt(len(images))))
    rows = int(math.ceil(len(images) / columns))
    h, w = images[0].shape[:2]
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = img
    return grid


def main(argv=None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m kpfast.data.show_augmentations",
                                     description="Grid of augmented samples with keypoints.")
    parser.add_argument("--out", type=Path, required=True, help="output image (PNG)")
    parser.add_argument("--data", type=Path, default=None, help="COCO root (default: synthetic)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--n", type=int, default=16, help="number of samples")
    parser.add_argument("--input-size", type=int, nargs=2, default=(256, 192), metavar=("H", "W"))
    parser.add_argument("--convention", default="udp", choices=geometry.CONVENTIONS)
    parser.add_argument("--augmentation", type=Path, default=None,
                        help="YAML file with an augmentation dict (default: the default set)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n <= 0:
        parser.error(f"--n must be > 0, got {args.n}")
    augmentation = "default"
    if args.augmentation is not None:
        import yaml

        augmentation = yaml.safe_load(args.augmentation.read_text())
    root = args.data
    if root is None:
        from .synthetic import ensure_synthetic_dataset

        root = ensure_synthetic_dataset()
    dataset = CocoKeypointDataset(root, args.split, input_size=tuple(args.input_size), train=True,
                                  augmentation=augmentation, convention=args.convention,
                                  seed=args.seed)
    rng = np.random.default_rng(args.seed)
    indices = rng.choice(len(dataset), size=args.n, replace=len(dataset) < args.n)
    tiles = [draw_sample(dataset[int(i)], dataset) for i in indices]
    grid = make_grid(tiles)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {args.out}")
    print(f"wrote {args.out} ({args.n} samples from {root})")
    return args.out


if __name__ == "__main__":
    main()
