"""COCO top-down keypoint dataset on pycocotools.

One sample is one person instance cropped by an affine warp around its (GT or detected) box::

    {"image":     float32 (3, H, W), ImageNet-normalised RGB,
     "keypoints": float32 (K, 2), x then y, in HEATMAP pixels (pixel (row i, col j) at x=j, y=i),
     "weights":   float32 (K,), 1 where the keypoint is labelled (v > 0) and inside the crop,
     "meta":      {"image_id": int, "center": (2,), "scale": (2,), "rotation": float,
                   "score": float, "area": float, "bbox": (4,), "flipped": bool,
                   "index": int, "affine": (2, 3) image -> heatmap matrix}}

``center``/``scale``/``rotation``/``flipped`` with :func:`kpfast.geometry.heatmap_to_image`
(or simply the inverse of ``affine``) put heatmap coordinates back into the image. They describe
the affine part of the augmentation; albumentations' non-affine warps (Perspective, Elastic,
off by default) move the keypoints further, and only evaluation samples (never augmented) need
the mapping back. ``index`` is the instance actually returned (another one after a failed decode).

Faults: images missing when the index is built are dropped, counted (``skipped_missing``) and
reported once; an image that fails to decode at load time is skipped and another sample drawn;
failures are counted in shared memory so DataLoader workers' counts reach the main process
(:meth:`CocoKeypointDataset.epoch_counts`); above ``max_bad_fraction`` the run stops with an error.
No placeholder image is ever returned.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .. import geometry
from .augment import BoxJitter, CropAugmenter, resolve_augmentation_config
from .info import DatasetInfo
from .transforms import decode_image, normalize_image, warp_crop
from .validate import load_json, validate_detections, validate_keypoint_annotations

__all__ = ["CocoKeypointDataset", "Instance", "BadDataError", "resolve_coco_paths"]

log = logging.getLogger(__name__)

# Shared counter slots: slot 0 is the main process, slot 1 + w is DataLoader worker w. Each slot
# is written by one process only, so the increments need no lock.
_COUNTER_SLOTS = 257
_LOADED, _FAILED_EPOCH, _FAILED_TOTAL = 0, 1, 2


class BadDataError(RuntimeError):
    """Too many missing or undecodable images: the data cannot be trusted for this run."""


@dataclass
class Instance:
    """One person instance of the index."""

    image_id: int
    image_path: Path
    bbox: np.ndarray          # (4,) x, y, w, h in image pixels
    keypoints: np.ndarray     # (K, 3) x, y, v (zeros for detector boxes)
    score: float
    area: float
    annotation_id: int = -1


def resolve_coco_paths(root: str | Path | None, split: str, ann_file=None, image_dir=None):
    """Find the annotation file and image directory of ``split`` under ``root``.

    Layouts: ``ROOT/annotations/person_keypoints_{split}2017.json`` with images in
    ``ROOT/images/{split}2017/`` or ``ROOT/{split}2017/``. Explicit ``ann_file``/``image_dir``
    override. ``split`` may be ``train``/``val`` or already ``train2017``.
    """
    tag = split if split.endswith("2017") or split.endswith("20") else f"{split}2017"
    if ann_file is None:
        if root is None:
            raise ValueError("either root or ann_file must be given")
        ann_file = Path(root) / "annotations" / f"person_keypoints_{tag}.json"
    if image_dir is None:
        if root is None:
            raise ValueError("either root or image_dir must be given")
        candidates = [Path(root) / "images" / tag, Path(root) / tag]
        image_dir = next((c for c in candidates if c.is_dir()), None)
        if image_dir is None:
            raise FileNotFoundError(f"no image directory for split {split!r}: tried "
                                    + ", ".join(str(c) for c in candidates))
    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file():
        raise FileNotFoundError(f"annotation file not found: {ann_file}")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"image directory not found: {image_dir}")
    return ann_file, image_dir


def _pair(value, name) -> tuple[int, int]:
    try:
        a, b = (int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of ints (H, W), got {value!r}") from None
    if a <= 0 or b <= 0:
        raise ValueError(f"{name} must be positive (H, W), got {tuple(value)!r}")
    return a, b


class CocoKeypointDataset(Dataset):
    """Top-down COCO keypoint dataset.

    Args:
        root: dataset root (see :func:`resolve_coco_paths`); ``ann_file``/``image_dir`` override.
        split: ``"train"``, ``"val"``, ...
        input_size: network input ``(H, W)``, e.g. ``(256, 192)``.
        heatmap_size: ``(H, W)``; default ``input_size // heatmap_stride``.
        heatmap_stride: used when ``heatmap_size`` is not given (default 4).
        convention: ``"udp"`` or ``"standard"`` crop/heatmap geometry (:mod:`kpfast.geometry`).
        train: training mode (augmentation on; GT boxes of valid instances).
        augmentation: dict / ``"default"`` / ``"none"`` (see :mod:`kpfast.data.augment`); only used
            when ``train``. Evaluation samples are never augmented.
        detections: COCO results JSON of person boxes used instead of GT boxes (evaluation).
        det_score_threshold: detector boxes scoring below it are dropped.
        padding: box padding factor (1.25).
        dataset_info: overrides for :class:`DatasetInfo` (sigmas, flip pairs, ...).
        max_bad_fraction: the largest tolerated fraction of missing images (at index time) or of
            failed decodes per epoch (relative to the dataset length) before :class:`BadDataError`.
        seed: base seed; the augmentation of sample ``i`` in epoch ``e`` depends only on
            ``(seed, e, i)``, whatever the number of workers.
        category_id: the keypoint category to use when the file has several (default: the first).
    """

    def __init__(self, root=None, split: str = "train", *, ann_file=None, image_dir=None,
                 input_size: Sequence[int] = (256, 192), heatmap_size: Sequence[int] | None = None,
                 heatmap_stride: int = 4, convention: str = "udp", train: bool = True,
                 augmentation: Mapping[str, Any] | str | None = "default",
                 detections: str | Path | None = None, det_score_threshold: float = 0.0,
                 padding: float = 1.25, dataset_info: Mapping[str, Any] | None = None,
                 max_bad_fraction: float = 0.05, seed: int = 0, category_id: int | None = None):
        if convention not in geometry.CONVENTIONS:
            raise ValueError(f"convention must be one of {geometry.CONVENTIONS}, got {convention!r}")
        if not 0.0 <= max_bad_fraction <= 1.0:
            raise ValueError(f"max_bad_fraction must be in [0, 1], got {max_bad_fraction!r}")
        self.input_size = _pair(input_size, "input_size")
        if heatmap_size is None:
            if heatmap_stride <= 0:
                raise ValueError(f"heatmap_stride must be > 0, got {heatmap_stride!r}")
            heatmap_size = (self.input_size[0] // heatmap_stride, self.input_size[1] // heatmap_stride)
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")
        self.convention = convention
        self.train = bool(train)
        self.padding = float(padding)
        self.max_bad_fraction = float(max_bad_fraction)
        self.seed = int(seed)
        self.det_score_threshold = float(det_score_threshold)
        self.ann_file, self.image_dir = resolve_coco_paths(root, split, ann_file, image_dir)

        data = load_json(self.ann_file)
        validate_keypoint_annotations(data, str(self.ann_file), category_id)
        cats = [c for c in data["categories"] if c.get("keypoints")]
        category = next(c for c in cats if category_id is None or c["id"] == category_id)
        self.info = DatasetInfo.from_category(category, dataset_info)
        from pycocotools.coco import COCO

        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
            self.coco.createIndex()

        self.detections_file = Path(detections) if detections is not None else None
        self.skipped_small_detections = 0
        instances = self._detector_instances() if detections is not None else self._gt_instances()
        self.skipped_missing, self.missing_files = 0, []
        self.instances = self._drop_missing(instances)

        in_h, in_w = self.input_size
        self.aspect_ratio = in_w / in_h
        aug_config = resolve_augmentation_config(augmentation if self.train else "none")
        self.augmentation_config = aug_config
        self.box_jitter = BoxJitter(aug_config, self.info, self.aspect_ratio)
        self.crop_augmenter = CropAugmenter(aug_config["albumentations"], self.info.flip_index)
        self._hm_scale = geometry.heatmap_scale((in_w, in_h), self.heatmap_size[::-1], convention)

        self._counters = torch.zeros((_COUNTER_SLOTS, 3), dtype=torch.int64).share_memory_()
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._bad_files: set[str] = set()  # per process: do not decode a known-bad file twice

    # ------------------------------------------------------------------ index
    def _image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _gt_instances(self) -> list[Instance]:
        k = self.info.num_keypoints
        out = []
        for image_id in sorted(self.coco.imgs):
            img = self.coco.imgs[image_id]
            width, height = img.get("width", math.inf), img.get("height", math.inf)
            for ann in self.coco.imgToAnns.get(image_id, []):
                if ann.get("category_id") != self.info.category_id or ann.get("iscrowd", 0):
                    continue
                kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(k, 3)
                if not np.any(kps[:, 2] > 0):
                    continue
                x, y, w, h = ann["bbox"]
                # Clip the box to the image, as the reference pipelines do.
                x1, y1 = max(0.0, x), max(0.0, y)
                x2, y2 = min(width, x + w), min(height, y + h)
                if not (x2 > x1 and y2 > y1):
                    continue
                out.append(Instance(image_id, self._image_path(image_id),
                                    np.array([x1, y1, x2 - x1, y2 - y1]), kps, 1.0,
                                    float(ann.get("area", w * h)), int(ann.get("id", -1))))
        return out

    def _detector_instances(self) -> list[Instance]:
        dets = load_json(self.detections_file)
        validate_detections(dets, set(self.coco.imgs), str(self.detections_file))
        k = self.info.num_keypoints
        out = []
        for det in dets:
            if det.get("category_id", self.info.category_id) != self.info.category_id:
                continue
            if det["score"] < self.det_score_threshold:
                continue
            x, y, w, h = det["bbox"]
            if not (w > 0 and h > 0):
                self.skipped_small_detections += 1
                continue
            out.append(Instance(int(det["image_id"]), self._image_path(det["image_id"]),
                                np.array([x, y, w, h], dtype=np.float64), np.zeros((k, 3)),
                                float(det["score"]), float(w * h)))
        if self.skipped_small_detections:
            log.warning("%s: skipped %d detector boxes with non-positive size",
                        self.detections_file, self.skipped_small_detections)
        out.sort(key=lambda inst: (inst.image_id, -inst.score))
        return out

    def _drop_missing(self, instances: list[Instance]) -> list[Instance]:
        exists: dict[Path, bool] = {}
        kept = []
        for inst in instances:
            if inst.image_path not in exists:
                exists[inst.image_path] = inst.image_path.is_file()
                if not exists[inst.image_path]:
                    self.missing_files.append(inst.image_path)
            if exists[inst.image_path]:
                kept.append(inst)
            else:
                self.skipped_missing += 1
        if self.skipped_missing:
            log.warning("%s: %d instance(s) skipped because %d image file(s) are missing "
                        "(first: %s)", self.ann_file, self.skipped_missing, len(self.missing_files),
                        self.missing_files[0])
            fraction = self.skipped_missing / max(1, len(instances))
            if fraction > self.max_bad_fraction:
                raise BadDataError(
                    f"{self.skipped_missing} of {len(instances)} instances ({fraction:.1%}) have "
                    f"missing image files under {self.image_dir}, above max_bad_fraction="
                    f"{self.max_bad_fraction:.1%}; first missing: {self.missing_files[0]}")
        if not kept:
            raise BadDataError(f"{self.ann_file}: no usable instances (mode "
                               f"{'train' if self.train else 'eval'}, "
                               f"{'detections' if self.detections_file else 'GT boxes'})")
        return kept

    # ------------------------------------------------------------------ counters
    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation stream of ``epoch`` (visible to persistent workers too)."""
        self._epoch[0] = int(epoch)

    def _slot(self) -> int:
        info = get_worker_info()
        return 0 if info is None else 1 + (info.id % (_COUNTER_SLOTS - 1))

    @property
    def failed_decodes(self) -> int:
        """Failed decodes since construction, summed over the main process and all workers."""
        return int(self._counters[:, _FAILED_TOTAL].sum())

    def epoch_counts(self, reset: bool = True) -> dict[str, int]:
        """Per-epoch fault counts from all processes; ``reset`` starts the next epoch at zero.

        Returns ``{"loaded", "failed_decodes", "skipped_missing"}`` and logs a warning when
        decodes failed. Call it from the main process at the end of each epoch.
        """
        counts = {"loaded": int(self._counters[:, _LOADED].sum()),
                  "failed_decodes": int(self._counters[:, _FAILED_EPOCH].sum()),
                  "skipped_missing": self.skipped_missing}
        if counts["failed_decodes"]:
            log.warning("%s: %d image decode failure(s) this epoch (samples redrawn)",
                        self.image_dir, counts["failed_decodes"])
        if reset:
            self._counters[:, _LOADED] = 0
            self._counters[:, _FAILED_EPOCH] = 0
        return counts

    # ------------------------------------------------------------------ samples
    def __len__(self) -> int:
        return len(self.instances)

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(self._epoch[0]), index, attempt])

    def _load(self, inst: Instance) -> np.ndarray | None:
        key = str(inst.image_path)
        image = None if key in self._bad_files else decode_image(inst.image_path)
        slot = self._slot()
        self._counters[slot, _LOADED] += 1
        if image is None:
            if key not in self._bad_files:
                log.warning("cannot decode image %s (image id %d); drawing another sample",
                            inst.image_path, inst.image_id)
                self._bad_files.add(key)
            self._counters[slot, _FAILED_EPOCH] += 1
            self._counters[slot, _FAILED_TOTAL] += 1
            failed = int(self._counters[:, _FAILED_EPOCH].sum())
            if failed > self.max_bad_fraction * len(self):
                raise BadDataError(
                    f"{failed} image decode failures this epoch for a dataset of {len(self)} "
                    f"instances, above max_bad_fraction={self.max_bad_fraction:.1%} "
                    f"(last: {inst.image_path}, image id {inst.image_id})")
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} instances")
        original = index
        for attempt in range(len(self) + 1):
            rng = self._rng(original, attempt)
            inst = self.instances[index]
            image = self._load(inst)
            if image is not None:
                return self._make_sample(inst, image, rng, index)
            index = int(rng.integers(len(self)))
        raise BadDataError(f"no decodable image found after {len(self) + 1} draws")

    def _plan_crop(self, inst: Instance, rng: np.random.Generator):
        """Box jitter and the image -> crop matrix (flip included) of one sample."""
        in_h, in_w = self.input_size
        center, scale = geometry.bbox_xywh_to_center_scale(inst.bbox, self.aspect_ratio, self.padding)
        box = self.box_jitter(center, scale, inst.keypoints[:, :2], inst.keypoints[:, 2] > 0, rng)
        matrix = geometry.crop_matrix(box.center, box.scale, box.rotation, (in_w, in_h), self.convention)
        if box.flipped:
            matrix = geometry.compose_affine(geometry.flip_matrix(in_w), matrix)
        return box, matrix

    def _make_sample(self, inst: Instance, image_bgr: np.ndarray, rng: np.random.Generator,
                     index: int) -> dict[str, Any]:
        in_h, in_w = self.input_size
        k = self.info.num_keypoints
        box, matrix = self._plan_crop(inst, rng)
        labelled = inst.keypoints[:, 2] > 0
        crop = warp_crop(image_bgr, matrix, (in_w, in_h))
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        kps_crop = geometry.transform_points(inst.keypoints[:, :2], matrix).astype(np.float32)
        if box.flipped:
            kps_crop = kps_crop[self.info.flip_index]
            labelled = labelled[self.info.flip_index]
        if self.crop_augmenter:
            crop, kps_crop, swaps = self.crop_augmenter(crop, kps_crop, rng)
            if swaps % 2:  # albumentations' HorizontalFlip: record it like the affine flip
                labelled = labelled[self.info.flip_index]
                matrix = geometry.compose_affine(geometry.flip_matrix(in_w), matrix)
                box.flipped = not box.flipped
        inside = ((kps_crop[:, 0] >= 0) & (kps_crop[:, 0] <= in_w - 1)
                  & (kps_crop[:, 1] >= 0) & (kps_crop[:, 1] <= in_h - 1))
        weights = (labelled & inside & np.isfinite(kps_crop).all(1)).astype(np.float32)
        kx, ky = self._hm_scale
        keypoints = kps_crop * np.array([kx, ky], dtype=np.float32)
        heat_matrix = geometry.compose_affine(np.array([[kx, 0, 0], [0, ky, 0]]), matrix)
        assert keypoints.shape == (k, 2)
        return {
            "image": torch.from_numpy(normalize_image(np.ascontiguousarray(crop))),
            "keypoints": torch.from_numpy(np.ascontiguousarray(keypoints, dtype=np.float32)),
            "weights": torch.from_numpy(weights),
            "meta": {
                "image_id": int(inst.image_id),
                "center": box.center.astype(np.float32),
                "scale": box.scale.astype(np.float32),
                "rotation": float(box.rotation),
                "score": float(inst.score),
                "area": float(inst.area),
                "bbox": inst.bbox.astype(np.float32),
                "flipped": bool(box.flipped),
                "index": int(index),
                "affine": heat_matrix.astype(np.float32),
            },
        }


if __name__ == "__main__":  # python -m kpfast.data.coco download ROOT [--split val|train|all]
    from kpfast.data.download import main
    raise SystemExit(main())
