"""``python -m kpfast.predict --checkpoint PATH IMAGE...``: keypoints on images.

``--weights NAME|PATH|URL`` runs pretrained weights instead of a training checkpoint (e.g.
MMPose's published Lite-HRNet checkpoints, docs/pretrained.md); their keypoints are COCO's 17.

Writes, into --output-dir, one skeleton overlay per image and ``results.json`` in COCO results
format (``image_id`` is the image's index in the command line unless --boxes gives ids).
Without --boxes the whole image is the person box. --boxes takes a JSON file: either COCO
results/detections (``[{"image_id", "bbox": [x, y, w, h], "score"}, ...]`` with image ids matching
``000000000785.jpg``-style file names or the image order), or a mapping
``{"image.jpg": [[x, y, w, h, score], ...]}``.

Boxes that cannot give a prediction (non-finite numbers, zero or negative size, no overlap with
the image, or larger than ``MAX_BOX_TO_IMAGE`` times the image) are skipped, each named on
stderr and counted in the summary; ``results.json`` is strict JSON (never NaN or Infinity).
Overlays are ``<stem>_pose.jpg``, made unique (``<stem>_<n>_pose.jpg``) when two given images
share a stem.

Images are read in their files' stored pixel frame (an EXIF orientation tag is ignored, as for
training data, kpfast.data.transforms), and every coordinate written is in that frame.

Outputs are checked before anything is read or written (kpfast.outputs): none may be an
input (an image, the checkpoint, --boxes, --config) or lie in a training run folder, and an
existing file is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from kpfast.cli import run_cli
from kpfast.engine.arguments import add_config_arguments, add_weights_arguments, load_weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.predict", description=__doc__.split("\n\n")[0])
    add_weights_arguments(parser, "run")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--boxes", default=None, help="JSON of person boxes (see module doc)")
    parser.add_argument("--output-dir", "--output_dir", dest="out", default="predictions", help="where outputs go")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace overlays and results.json left there by an earlier predict (never an "
                        "input file)")
    parser.add_argument("--score-threshold", type=float, default=0.3, help="keypoints drawn above this score")
    parser.add_argument("--box-score-threshold", type=float, default=0.0, help="ignore boxes scoring below this")
    add_config_arguments(parser, flags=("device", "ops_backend"))
    return parser


# A box this many times larger than the image (either side) is a broken detection, not a person.
MAX_BOX_TO_IMAGE = 10.0


def box_problem(bbox: list[float], image_wh: tuple[int, int]) -> str | None:
    """Why ``bbox = [x, y, w, h]`` cannot be used on an image of ``image_wh``, or ``None``."""
    x, y, w, h = bbox
    width, height = image_wh
    if not all(math.isfinite(v) for v in bbox):
        return "non-finite coordinates"
    if not (w > 0 and h > 0):
        return f"non-positive size (w={w:g}, h={h:g})"
    if w > MAX_BOX_TO_IMAGE * width or h > MAX_BOX_TO_IMAGE * height:
        return f"more than {MAX_BOX_TO_IMAGE:g}x the {width}x{height} image"
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"outside the {width}x{height} image"
    return None


def overlay_names(images: list[Path]) -> list[str]:
    """``<stem>_pose.jpg`` per image, with ``_<n>`` added where stems would collide."""
    names, used = [], set()
    stems = [p.stem for p in images]
    for order, stem in enumerate(stems):
        name = f"{stem}_pose.jpg" if stems.count(stem) == 1 else f"{stem}_{order}_pose.jpg"
        n = order
        while name in used:  # e.g. an image literally named "<stem>_<order>"
            n += len(images)
            name = f"{stem}_{n}_pose.jpg"
        used.add(name)
        names.append(name)
    return names


def _image_id(path: Path, order: int) -> int:
    return int(path.stem) if path.stem.isdigit() else order


def _is_number(v) -> bool:
    # NaN/inf pass here on purpose: such boxes are skipped and counted per image (box_problem).
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load_boxes(path: str | None, images: list[Path]) -> dict[int, list[tuple[list[float], float]]]:
    """Boxes per image position: ``{i: [([x, y, w, h], score), ...]}``."""
    if path is None:
        return {}
    try:
        with open(path) as handle:
            data = json.load(handle)
    except RecursionError:
        raise ValueError(f"--boxes {path}: JSON nested too deeply to read") from None
    except UnicodeDecodeError:
        raise ValueError(f"--boxes {path}: not UTF-8 text") from None
    except ValueError as exc:  # invalid JSON, or a number of more digits than Python converts
        raise ValueError(f"--boxes {path}: not readable JSON ({' '.join(str(exc).split())[:160]})") from None
    per_image: dict[int, list] = {i: [] for i in range(len(images))}
    if isinstance(data, dict):
        names = {p.name: i for i, p in enumerate(images)} | {str(p): i for i, p in enumerate(images)}
        for name, boxes in data.items():
            if name not in names:
                raise ValueError(f"--boxes: image {name!r} is not among the given images")
            if not isinstance(boxes, list):
                raise ValueError(f"--boxes {path}: expected a list of boxes for {name!r}, got {boxes!r}")
            for box in boxes:
                if not (isinstance(box, list) and len(box) in (4, 5) and all(_is_number(v) for v in box)):
                    raise ValueError(f"--boxes {path}: expected [x, y, w, h(, score)] numbers for {name!r}, "
                                     f"got {box!r}")
                per_image[names[name]].append(([float(v) for v in box[:4]], float(box[4]) if len(box) == 5 else 1.0))
        return per_image
    if not isinstance(data, list):
        raise ValueError(f"--boxes: expected a list or a mapping, got {type(data).__name__}")
    ids = {_image_id(p, i): i for i, p in enumerate(images)}
    for index, entry in enumerate(data):
        if not isinstance(entry, dict) or "bbox" not in entry or "image_id" not in entry:
            raise ValueError(f"--boxes {path}: entry #{index} needs 'image_id' and 'bbox', got {entry!r}")
        box, score = entry["bbox"], entry.get("score", 1.0)
        if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) for v in box)
                and _is_number(score) and isinstance(entry["image_id"], int)):
            raise ValueError(f"--boxes {path}: entry #{index} needs an integer image_id, a bbox of 4 numbers "
                             f"and a numeric score, got {entry!r}")
        if int(entry["image_id"]) in ids:
            box = [float(v) for v in entry["bbox"]]
            per_image[ids[int(entry["image_id"])]].append((box, float(entry.get("score", 1.0))))
    return per_image


def keypoint_info(loaded):
    """Keypoint names, flip pairs and skeleton of the loaded network: a kpfast checkpoint's
    stored ones, else COCO's (the keypoints of the published weights)."""
    from kpfast.data.info import DatasetInfo

    if loaded.dataset_info is not None:
        return DatasetInfo.from_dict(loaded.dataset_info)

    coco = DatasetInfo.coco()
    if loaded.config.model.num_keypoints != coco.num_keypoints:
        raise ValueError(f"--weights: the network has {loaded.config.model.num_keypoints} keypoints, and only COCO's "
                         f"{coco.num_keypoints} are known without a dataset; pass a kpfast training checkpoint "
                         "(--checkpoint), which stores its keypoints")
    return coco


def check_outputs(args, images: list[Path], overlays: list[str]) -> None:
    """Refuse (one line, nothing written) an output that is an input, lies in a run folder, or
    exists without --overwrite."""
    from kpfast.outputs import OutputGuard

    guard = OutputGuard(replace_existing=args.overwrite,
                        replace_hint="; pass --overwrite to replace it, or another --output-dir")
    guard.protect(args.checkpoint, "the checkpoint")
    guard.protect(args.weights, "the --weights file")
    guard.protect(args.boxes, "the --boxes file")
    guard.protect(args.config, "the --config file")
    for image in images:
        guard.protect(image, "the input image")
    out_dir = Path(args.out)
    for name in [*overlays, "results.json"]:
        guard.check(out_dir / name, "--output-dir")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    out_dir = Path(args.out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--output-dir {out_dir} is a file, not a directory; pass a directory "
                         "(it is created when missing)")
    images = [Path(p) for p in args.images]
    overlays = overlay_names(images)
    check_outputs(args, images, overlays)
    from kpfast.data.transforms import read_image_checked
    from kpfast.outputs import atomic_write_bytes
    from kpfast.engine.evaluation import instance_score
    from kpfast.engine.trainer import select_device
    from kpfast.engine.visualize import draw_pose, write_image
    from kpfast.inference import Predictor

    loaded = load_weights(args)
    config = loaded.config
    device = select_device(config.train.device)
    model = loaded.model.to(device).eval()
    info = keypoint_info(loaded)
    predictor = Predictor.from_config(config, model, device, info.flip_pairs)
    boxes = load_boxes(args.boxes, images)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, skipped, bad_boxes = [], [], 0
    for order, path in enumerate(images):
        image, reason = read_image_checked(path)  # header checked first: no decompression bomb
        if image is None:
            skipped.append(str(path))
            print(f"skipped unreadable image {path}: {reason}", file=sys.stderr)
            continue
        h, w = image.shape[:2]
        if args.boxes:
            instances = []
            for bbox, box_score in boxes.get(order, []):
                problem = box_problem(bbox, (w, h)) or (
                    None if math.isfinite(box_score) else f"non-finite score {box_score}")
                if problem is not None:
                    bad_boxes += 1
                    print(f"skipped box {bbox} of {path}: {problem}", file=sys.stderr)
                elif not box_score >= args.box_score_threshold:
                    continue
                else:
                    instances.append((bbox, box_score))
        else:
            instances = [([0.0, 0.0, float(w), float(h)], 1.0)]  # the whole image is the box
        overlay = image
        if instances:
            keypoints = predictor.predict_image(image, [bbox for bbox, _ in instances])
            for kps, (bbox, box_score) in zip(keypoints, instances):
                if not np.isfinite(kps).all():  # e.g. a NaN heatmap: never written as NaN
                    bad_boxes += 1
                    print(f"skipped box {bbox} of {path}: the network gave non-finite keypoints",
                          file=sys.stderr)
                    continue
                overlay = draw_pose(overlay, kps, info.skeleton, args.score_threshold)
                results.append({
                    "image_id": _image_id(path, order),
                    "file_name": path.name,
                    "category_id": 1,
                    "bbox": bbox,
                    "keypoints": [float(v) for v in kps.reshape(-1)],
                    "score": instance_score(kps[:, 2], box_score, config.eval.keypoint_score_threshold),
                })
        write_image(out_dir / overlays[order], overlay)
    atomic_write_bytes(out_dir / "results.json", json.dumps(results, indent=1, allow_nan=False).encode())
    print(f"{len(results)} instance(s) on {len(images) - len(skipped)} image(s) -> {out_dir} "
          "(coordinates in the files' stored pixel frame; EXIF orientation is ignored)"
          + (f"; {len(skipped)} unreadable image(s) skipped" if skipped else "")
          + (f"; {bad_boxes} invalid box(es) skipped" if bad_boxes else ""))
    return 1 if skipped and len(skipped) == len(images) else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
