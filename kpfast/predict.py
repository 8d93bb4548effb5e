"""``python -m kpfast.predict --checkpoint PATH IMAGE...``: keypoints on images.

Writes, into --output-dir, one skeleton overlay per image and ``results.json`` in COCO results
format (``image_id`` is the image's index in the command line unless --boxes gives ids).
Without --boxes the whole image is the person box. --boxes takes a JSON file: either COCO
results/detections (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]`` with image ids matching
``000000000785.jpg``-style file names or the image order), or a mapping
``{"image.jpg": [[x, y, w, h, score], ...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from kpfast.engine.cli import add_config_arguments, resolve_config, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--boxes", default=None, help="JSON of person boxes (see module doc)")
    parser.add_argument("--output-dir", "--output_dir", dest="out", default="predictions", help="where outputs go")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="keypoints drawn above this score")
    parser.add_argument("--box-score-threshold", type=float, default=0.0, help="ignore boxes scoring below this")
    add_config_arguments(parser, flags=("device", "ops_backend"))
    return parser


def _image_id(path: Path, order: int) -> int:
    return int(path.stem) if path.stem.isdigit() else order


def load_boxes(path: str | None, images: list[Path]) -> dict[int, list[tuple[list[float], float]]]:
    """Boxes per image position: ``{i: [([x, y, w, h], score), ...]}``."""
    if path is None:
        return {}
    with open(path) as handle:
        data = json.load(handle)
    per_image: dict[int, list] = {i: [] for i in range(len(images))}
    if isinstance(data, dict):
        names = {p.name: i for i, p in enumerate(images)} | {str(p): i for i, p in enumerate(images)}
        for name, boxes in data.items():
            if name not in names:
                raise ValueError(f"--boxes: image {name!r} is not among the given images")
            for box in boxes:
                if len(box) not in (4, 5):
                    raise ValueError(f"--boxes: expected [x, y, w, h(, score)] for {name!r}, got {box!r}")
                per_image[names[name]].append(([float(v) for v in box[:4]], float(box[4]) if len(box) == 5 else 1.0))
        return per_image
    if not isinstance(data, list):
        raise ValueError(f"--boxes: expected a list or a mapping, got {type(data).__name__}")
    ids = {_image_id(p, i): i for i, p in enumerate(images)}
    for entry in data:
        if "bbox" not in entry or "image_id" not in entry:
            raise ValueError(f"--boxes: entries need 'image_id' and 'bbox', got {entry!r}")
        if int(entry["image_id"]) in ids:
            box = [float(v) for v in entry["bbox"]]
            per_image[ids[int(entry["image_id"])]].append((box, float(entry.get("score", 1.0))))
    return per_image


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import cv2
    import torch

    from kpfast import geometry
    from kpfast.engine import builders
    from kpfast.engine.checkpoint import atomic_write_bytes, load_checkpoint
    from kpfast.engine.evaluation import instance_score, logit_activation
    from kpfast.engine.inference import decode, predict_heatmaps
    from kpfast.engine.trainer import select_device
    from kpfast.engine.visualize import draw_pose, write_image

    state = load_checkpoint(args.checkpoint)
    config = resolve_config(args, state["config"])
    device = select_device(config.train.device)
    model = builders.model_from_checkpoint(state, config).to(device).eval()
    info = builders.info_from_dict(state["dataset_info"])
    images = [Path(p) for p in args.images]
    boxes = load_boxes(args.boxes, images)
    in_h, in_w = config.data.input_size
    hm_size = builders.heatmap_size(config, model)
    conv = builders.convention(config)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for order, path in enumerate(images):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            skipped.append(str(path))
            print(f"skipped unreadable image {path}", file=sys.stderr)
            continue
        h, w = image.shape[:2]
        if args.boxes:
            instances = [b for b in boxes.get(order, []) if b[1] >= args.box_score_threshold]
        else:
            instances = [([0.0, 0.0, float(w), float(h)], 1.0)]  # the whole image is the box
        overlay = image
        if instances:
            crops, matrices = [], []
            for bbox, _ in instances:
                center, scale = geometry.bbox_xywh_to_center_scale(bbox, in_w / in_h, 1.25)
                matrix = geometry.crop_matrix(center, scale, 0.0, (in_w, in_h), conv)
                crop = cv2.warpAffine(image, np.asarray(matrix, np.float64), (in_w, in_h), flags=cv2.INTER_LINEAR)
                crops.append(builders.normalize(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)))
                kx, ky = geometry.heatmap_scale((in_w, in_h), (hm_size[1], hm_size[0]), conv)
                matrices.append(geometry.compose_affine(np.array([[kx, 0, 0], [0, ky, 0]]), matrix))
            batch = torch.stack(crops).to(device)
            heatmaps = predict_heatmaps(model, batch, config.eval.flip_test, info.flip_pairs,
                                        shift=config.loss.encoding == "msra", precision=config.train.precision,
                                        activation=logit_activation(config.loss.kind))
            coords, scores = decode(heatmaps, config.eval.decoder, config.eval.blur_kernel, config.train.ops_backend)
            image_xy = geometry.transform_points(coords, geometry.invert_affine(np.stack(matrices)))
            for i, (bbox, box_score) in enumerate(instances):
                kps = np.concatenate([image_xy[i], scores[i][:, None]], axis=1)
                overlay = draw_pose(overlay, kps, info.skeleton, args.score_threshold)
                results.append({
                    "image_id": _image_id(path, order),
                    "file_name": path.name,
                    "category_id": 1,
                    "bbox": bbox,
                    "keypoints": [float(v) for v in kps.reshape(-1)],
                    "score": instance_score(scores[i], box_score, config.eval.keypoint_score_threshold),
                })
        write_image(out_dir / f"{path.stem}_pose.jpg", overlay)
    atomic_write_bytes(out_dir / "results.json", json.dumps(results, indent=1).encode())
    print(f"{len(results)} instance(s) on {len(images) - len(skipped)} image(s) -> {out_dir}"
          + (f"; {len(skipped)} unreadable image(s) skipped" if skipped else ""))
    return 1 if skipped and len(skipped) == len(images) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
