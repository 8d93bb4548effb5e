"""COCO top-down keypoint dataset on pycocotools.

One sample is one person instance cropped by an affine warp around its (GT or detected) box::

    {"image":     uint8 (3, H, W) RGB (normalised on the device: kpfast.data.normalize),
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

Memory: the annotation JSON is loaded once, validated, and only what sampling needs is kept, in
compact numpy arrays (:class:`InstanceTable`): no pycocotools index, no segmentation, no Python
object per instance. DataLoader workers therefore share the index copy-on-write without copying
it (reading a numpy array touches no reference count). Evaluation loads its own ground truth
from :attr:`CocoKeypointDataset.annotation_file`.

Faults: images missing when the index is built are dropped, counted (``skipped_missing``) and
reported once; an image that fails to decode at load time is skipped and another sample drawn
(so is an image whose header gives a size other than the annotation's, or more than
``max_image_pixels`` pixels: it is never decoded, see :func:`read_image_checked`);
failures are counted in shared memory so DataLoader workers' counts reach the main process
(:meth:`CocoKeypointDataset.epoch_counts`); above ``max_bad_fraction`` the run stops with an error.
No placeholder image is ever returned.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import kpfast._require_trainer  # noqa: F401  (first: one line when the trainer's packages are missing)
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .. import geometry
from .augment import BoxJitter, CropAugmenter, resolve_augmentation_config
from .info import DatasetInfo
from .jpeg import reduced_matrix, reduction_for_scale
from .transforms import (DEFAULT_MAX_IMAGE_PIXELS, read_image_reduced, read_jpeg_bytes_checked,
                         to_chw, warp_crop)
from .validate import load_json, validate_detections, validate_keypoint_annotations

__all__ = ["CocoKeypointDataset", "Instance", "InstanceTable", "BadDataError", "resolve_coco_paths"]

log = logging.getLogger(__name__)

# Shared counter slots: slot 0 is the main process, slot 1 + w is DataLoader worker w. Each slot
# is written by one process only, so the increments need no lock.
_COUNTER_SLOTS = 257
# A sample's random streams, one per stage (CocoKeypointDataset._rng): the box jitter keeps the
# stream it always had; the albumentations stage (photometric by default, on either decode path)
# has its own.
_BOX_STREAM, _ALBUMENTATIONS_STREAM = 0, 1
_LOADED, _FAILED_EPOCH, _FAILED_TOTAL = 0, 1, 2


class BadDataError(RuntimeError):
    """Too many missing or undecodable images: the data cannot be trusted for this run."""


@dataclass
class Instance:
    """One person instance, as a view of one row of an :class:`InstanceTable` (built on demand)."""

    image_id: int
    image_path: Path
    bbox: np.ndarray          # (4,) x, y, w, h in image pixels
    keypoints: np.ndarray     # (K, 3) x, y, v (zeros for detector boxes)
    score: float
    area: float
    annotation_id: int = -1


class InstanceTable:
    """The sampling index as compact arrays, one row per person instance.

    Rows: ``image_index`` (into the per-image arrays), ``image_id``, ``annotation_id`` (-1 for
    detector boxes), ``bbox`` (N, 4) float64 x, y, w, h, ``keypoints`` (N, K, 3) float32,
    ``score``, ``area``. Per image: ``file_names`` (one fixed-width string array), ``sizes``
    (M, 2) annotated width, height (0 when unknown). ``table[i]`` builds an :class:`Instance`.
    """

    def __init__(self, image_dir: Path, file_names: np.ndarray, sizes: np.ndarray,
                 image_index: np.ndarray, image_id: np.ndarray, annotation_id: np.ndarray,
                 bbox: np.ndarray, keypoints: np.ndarray, score: np.ndarray, area: np.ndarray):
        self.image_dir = image_dir
        self.file_names = np.asarray(file_names, dtype=np.str_)
        self.sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
        self.image_index = np.asarray(image_index, dtype=np.int64)
        self.image_id = np.asarray(image_id, dtype=np.int64)
        self.annotation_id = np.asarray(annotation_id, dtype=np.int64)
        self.bbox = np.asarray(bbox, dtype=np.float64).reshape(-1, 4)
        self.keypoints = np.asarray(keypoints, dtype=np.float32)
        self.score = np.asarray(score, dtype=np.float64)
        self.area = np.asarray(area, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.image_id)

    def image_path(self, row: int) -> Path:
        return self.image_dir / str(self.file_names[self.image_index[row]])

    def __getitem__(self, row: int) -> Instance:
        if not -len(self) <= row < len(self):
            raise IndexError(f"instance {row} out of range for {len(self)} instances")
        return Instance(int(self.image_id[row]), self.image_path(row), self.bbox[row].copy(),
                        self.keypoints[row].astype(np.float64), float(self.score[row]),
                        float(self.area[row]), int(self.annotation_id[row]))

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def select(self, rows: np.ndarray) -> "InstanceTable":
        """The rows ``rows`` (a boolean mask or indices), sharing the per-image arrays."""
        return InstanceTable(self.image_dir, self.file_names, self.sizes, self.image_index[rows],
                             self.image_id[rows], self.annotation_id[rows], self.bbox[rows],
                             self.keypoints[rows], self.score[rows], self.area[rows])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.file_names, self.sizes, self.image_index, self.image_id,
                                      self.annotation_id, self.bbox, self.keypoints, self.score,
                                      self.area))


def _release_freed_memory() -> None:
    """Hand the memory of the freed JSON tree back to the OS (glibc keeps it otherwise)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return
    trim(0)


def load_coco_gt(annotation_file):
    """pycocotools' COCO index of an annotation file (its loading chatter silenced)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        return COCO(str(annotation_file))


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


def clip_boxes_xywh(boxes: np.ndarray, sizes: np.ndarray, protocol: str = "kpfast") -> np.ndarray:
    """Ground-truth ``[x, y, w, h]`` boxes (N, 4) clipped to their images, ``sizes`` (N, 2) the
    annotated width, height (0: unknown, no clip). ``protocol`` "kpfast" clips to the image's
    area ``[0, W] x [0, H]``; "mmpose" to ``[0, W-1] x [0, H-1]``, as MMPose's
    ``parse_data_info`` does (docs/pretrained.md, "Evaluation protocols"). A box left with no
    area has ``w`` or ``h`` <= 0."""
    if protocol not in ("kpfast", "mmpose"):
        raise ValueError(f"protocol: expected 'kpfast' or 'mmpose', got {protocol!r}")
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    limit = np.where(sizes > 0, sizes - (1.0 if protocol == "mmpose" else 0.0), np.inf)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    low = np.clip(boxes[:, :2], 0.0, limit)
    high = np.clip(boxes[:, :2] + boxes[:, 2:], 0.0, limit)
    return np.concatenate([low, high - low], axis=1)


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
        max_image_pixels: images whose header gives more pixels are not decoded (skipped and
            counted like undecodable ones), nor are images whose header size differs from the
            annotation's ``width``/``height``: the guard against decompression bombs.
        protocol: the evaluation protocol whose ground-truth box clip applies
            (:func:`clip_boxes_xywh`): "kpfast" or "mmpose".
        decode_reduction_margin: JPEGs are decoded at 1/2, 1/4 or 1/8 of their size when the
            sample's crop keeps at least this many reduced pixels per network-input pixel
            (:mod:`kpfast.data.jpeg`; 1.0 is the measured choice); ``None`` (default) always
            decodes in full. Keypoints, targets and ``meta`` do not depend on it; the crop's
            pixels differ by resampling only (a 2x2 block average before the warp).
        decode_device: ``"cpu"`` (samples carry ``image``) or ``"cuda"``: samples carry the
            JPEG's bytes (``encoded``) and ``crop_matrix`` instead, decoded and warped on the
            device by :func:`kpfast.data.gpu_pipeline.materialize_batch`; keypoints, weights and
            ``meta`` are the CPU path's. JPEG only. The ``albumentations`` entries run there too
            (:mod:`kpfast.data.gpu_photometric`, the default ones; others are refused), drawn
            from a seed each sample carries (``photometric_seed``, from its own stream).
    """

    def __init__(self, root=None, split: str = "train", *, ann_file=None, image_dir=None,
                 input_size: Sequence[int] = (256, 192), heatmap_size: Sequence[int] | None = None,
                 heatmap_stride: int = 4, convention: str = "udp", train: bool = True,
                 augmentation: Mapping[str, Any] | str | None = "default",
                 detections: str | Path | None = None, det_score_threshold: float = 0.0,
                 padding: float = 1.25, dataset_info: Mapping[str, Any] | None = None,
                 max_bad_fraction: float = 0.05, seed: int = 0, category_id: int | None = None,
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, protocol: str = "kpfast",
                 decode_reduction_margin: float | None = None,
                 decode_device: str = "cpu"):
        if decode_device not in ("cpu", "cuda"):
            raise ValueError(f"decode_device must be 'cpu' or 'cuda', got {decode_device!r}")
        self.decode_device = decode_device
        if decode_reduction_margin is not None and not decode_reduction_margin > 0:
            raise ValueError(f"decode_reduction_margin must be > 0 or None, got {decode_reduction_margin!r}")
        self.decode_reduction_margin = decode_reduction_margin
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
        self.protocol = protocol  # the ground-truth box clip rule, clip_boxes_xywh
        self.ann_file, self.image_dir = resolve_coco_paths(root, split, ann_file, image_dir)

        self.annotation_file = self.ann_file  # evaluation loads its ground truth from here
        self.max_image_pixels = int(max_image_pixels)
        if self.max_image_pixels <= 0:
            raise ValueError(f"max_image_pixels must be > 0, got {max_image_pixels!r}")

        data = load_json(self.ann_file, drop_polygons=True)
        validate_keypoint_annotations(data, str(self.ann_file), category_id)
        cats = [c for c in data["categories"] if c.get("keypoints")]
        category = next(c for c in cats if category_id is None or c["id"] == category_id)
        self.info = DatasetInfo.from_category(category, dataset_info)
        images = self._image_table(data)
        annotations = data["annotations"]
        del data  # from here on only the lists this index reads stay referenced
        self.detections_file = Path(detections) if detections is not None else None
        self.skipped_small_detections = 0
        if detections is not None:
            del annotations
            table = self._detector_table(images)
        else:
            table = self._gt_table(images, annotations)
            del annotations
        del images
        _release_freed_memory()
        self.skipped_missing, self.missing_files = 0, []
        self.instances = self._drop_missing(table)

        in_h, in_w = self.input_size
        self.aspect_ratio = in_w / in_h
        # Every instance's crop box before jitter, once for the table rather than per sample
        # (elementwise: each row is what the one-box call gives).
        self._box_center, self._box_scale = geometry.bbox_xywh_to_center_scale(
            self.instances.bbox, self.aspect_ratio, self.padding)
        aug_config = resolve_augmentation_config(augmentation if self.train else "none")
        self.augmentation_config = aug_config
        self.box_jitter = BoxJitter(aug_config, self.info, self.aspect_ratio)
        # decode_device="cuda": the albumentations entries run batched on the device
        # (kpfast.data.gpu_photometric), drawn from seeds the samples carry.
        self.photometric = None
        if decode_device == "cuda":
            from .gpu_photometric import PhotometricAugmenter

            try:
                self.photometric = PhotometricAugmenter.from_config(aug_config["albumentations"])
            except ValueError as exc:
                raise ValueError(f"augmentation: decode_device='cuda' augments crops on the device: {exc}") from None
            self.crop_augmenter = CropAugmenter([], self.info.flip_index)
        else:
            self.crop_augmenter = CropAugmenter(aug_config["albumentations"], self.info.flip_index)
        self._hm_scale = geometry.heatmap_scale((in_w, in_h), self.heatmap_size[::-1], convention)

        self._counters = torch.zeros((_COUNTER_SLOTS, 3), dtype=torch.int64).share_memory_()
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        # Per process: file -> why it was refused; a known-bad file is not read twice.
        self.bad_files: dict[str, str] = {}

    # ------------------------------------------------------------------ index
    @property
    def coco(self):
        """A fresh pycocotools ``COCO`` of :attr:`annotation_file` (loaded on each access).

        Kept for callers that want the ground truth as pycocotools sees it; the dataset itself
        never holds one, so DataLoader workers do not inherit it.
        """
        return load_coco_gt(self.annotation_file)

    def _image_table(self, data: Mapping[str, Any]) -> dict[int, tuple[str, float, float]]:
        """image id -> (file name, annotated width, height; 0 when not given)."""
        return {img["id"]: (img["file_name"], float(img.get("width", 0)), float(img.get("height", 0)))
                for img in data["images"]}

    @staticmethod
    def _image_arrays(images: Mapping[int, tuple[str, float, float]], image_ids: np.ndarray):
        """Per-image arrays of the images ``image_ids`` refer to, and each row's index into them."""
        unique, image_index = np.unique(image_ids, return_inverse=True)
        entries = [images[int(i)] for i in unique]
        file_names = np.array([e[0] for e in entries] or [""], dtype=np.str_)[:len(entries)]
        sizes = np.array([(e[1], e[2]) for e in entries], dtype=np.float64).reshape(-1, 2)
        return file_names, sizes, image_index.reshape(-1)

    def _gt_table(self, images, annotations) -> InstanceTable:
        k = self.info.num_keypoints
        cat = self.info.category_id
        picked = [a for a in annotations if a["category_id"] == cat and not a.get("iscrowd", 0)]
        n = len(picked)
        keypoints = np.array([a["keypoints"] for a in picked], dtype=np.float32).reshape(n, k, 3)
        boxes = np.array([a["bbox"] for a in picked], dtype=np.float64).reshape(n, 4)
        image_id = np.array([a["image_id"] for a in picked], dtype=np.int64)
        annotation_id = np.array([a["id"] for a in picked], dtype=np.int64)
        area = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in picked], dtype=np.float64)
        del picked
        file_names, sizes, image_index = self._image_arrays(images, image_id)
        clipped = clip_boxes_xywh(boxes, sizes[image_index], self.protocol)
        keep = (keypoints[:, :, 2] > 0).any(axis=1) & (clipped[:, 2] > 0) & (clipped[:, 3] > 0)
        # Instances ordered by image id, then as in the file (what pycocotools' index gave).
        order = np.flatnonzero(keep)
        order = order[np.argsort(image_id[order], kind="stable")]
        return InstanceTable(self.image_dir, file_names, sizes, image_index[order], image_id[order],
                             annotation_id[order], clipped[order], keypoints[order],
                             np.ones(len(order)), area[order])

    def _detector_table(self, images) -> InstanceTable:
        dets = load_json(self.detections_file)
        validate_detections(dets, set(images), str(self.detections_file))
        k = self.info.num_keypoints
        picked = [d for d in dets if d.get("category_id", self.info.category_id) == self.info.category_id
                  and d["score"] >= self.det_score_threshold]
        del dets
        n = len(picked)
        boxes = np.array([d["bbox"] for d in picked], dtype=np.float64).reshape(n, 4)
        score = np.array([d["score"] for d in picked], dtype=np.float64)
        image_id = np.array([d["image_id"] for d in picked], dtype=np.int64)
        del picked
        positive = (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        self.skipped_small_detections = int((~positive).sum())
        if self.skipped_small_detections:
            log.warning("%s: skipped %d detector boxes with non-positive size",
                        self.detections_file, self.skipped_small_detections)
        rows = np.flatnonzero(positive)
        rows = rows[np.lexsort((-score[rows], image_id[rows]))]  # by image, best score first
        file_names, sizes, image_index = self._image_arrays(images, image_id[rows])
        return InstanceTable(self.image_dir, file_names, sizes, image_index, image_id[rows],
                             np.full(len(rows), -1), boxes[rows], np.zeros((len(rows), k, 3), np.float32),
                             score[rows], boxes[rows, 2] * boxes[rows, 3])

    def _drop_missing(self, table: InstanceTable) -> InstanceTable:
        present = np.array([os.path.isfile(os.path.join(self.image_dir, str(name)))
                            for name in table.file_names], dtype=bool)
        present_row = present[table.image_index] if len(table) else np.zeros(0, bool)
        self.skipped_missing = int((~present_row).sum())
        if self.skipped_missing:
            # Missing images in the order their instances come (the first one is named).
            first_rows = np.unique(table.image_index[~present_row], return_index=True)[1]
            missing = table.image_index[~present_row][np.sort(first_rows)]
            self.missing_files = [self.image_dir / str(table.file_names[i]) for i in missing]
            log.warning("%s: %d instance(s) skipped because %d image file(s) are missing "
                        "(first: %s)", self.ann_file, self.skipped_missing, len(self.missing_files),
                        self.missing_files[0])
            fraction = self.skipped_missing / max(1, len(table))
            if fraction > self.max_bad_fraction:
                raise BadDataError(
                    f"{self.skipped_missing} of {len(table)} instances ({fraction:.1%}) have "
                    f"missing image files under {self.image_dir}, above max_bad_fraction="
                    f"{self.max_bad_fraction:.1%}; first missing: {self.missing_files[0]}")
            table = table.select(present_row)
        if not len(table):
            raise BadDataError(f"{self.ann_file}: no usable instances (mode "
                               f"{'train' if self.train else 'eval'}, "
                               f"{'detections' if self.detections_file else 'GT boxes'})")
        return table

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

    def _rng(self, index: int, attempt: int, stream: int = _BOX_STREAM) -> np.random.Generator:
        """One stage's generator for a sample: a function of (seed, epoch, index, attempt) and the
        stage, so the albumentations draws do not depend on how many draws the box jitter made,
        and both decode paths take them from the same stream (docs/data.md, "Random streams")."""
        entropy = [self.seed, int(self._epoch[0]), index, attempt]
        return np.random.default_rng(entropy if stream == _BOX_STREAM else entropy + [stream])

    def _load(self, inst: Instance, row: int, reduction: int = 1) -> tuple[np.ndarray | None, int]:
        """``(image, factor)``: the BGR image decoded at ``1 / factor`` (``reduction`` for a
        JPEG, else 1), or ``(None, 1)`` after counting the failure."""
        key = str(inst.image_path)
        factor = 1
        if key in self.bad_files:
            image, reason = None, self.bad_files[key]
        else:
            width, height = self.instances.sizes[self.instances.image_index[row]]
            expected = (width, height) if width > 0 and height > 0 else None
            if self.decode_device == "cuda":
                image, reason = read_jpeg_bytes_checked(inst.image_path, expected, self.max_image_pixels)
            else:
                image, reason, factor = read_image_reduced(inst.image_path, expected,
                                                           self.max_image_pixels, reduction)
        slot = self._slot()
        self._counters[slot, _LOADED] += 1
        if image is None:
            if key not in self.bad_files:
                log.warning("cannot decode image %s (image id %d): %s; drawing another sample",
                            inst.image_path, inst.image_id, reason)
                self.bad_files[key] = reason
            self._counters[slot, _FAILED_EPOCH] += 1
            self._counters[slot, _FAILED_TOTAL] += 1
            failed = int(self._counters[:, _FAILED_EPOCH].sum())
            if failed > self.max_bad_fraction * len(self):
                raise BadDataError(
                    f"{failed} image decode failures this epoch for a dataset of {len(self)} "
                    f"instances, above max_bad_fraction={self.max_bad_fraction:.1%} "
                    f"(last: {inst.image_path}, image id {inst.image_id}: {reason})")
        return image, factor

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} instances")
        original = index
        in_h, in_w = self.input_size
        for attempt in range(len(self) + 1):
            rng = self._rng(original, attempt)
            inst = self.instances[index]
            # The box is sampled before decoding (it picks the reduction); the draws are the
            # same ones, in the same order, as when it was sampled after.
            plan = self._plan_crop(inst, rng, index)
            reduction = (1 if self.decode_reduction_margin is None else
                         reduction_for_scale(plan[0].scale, (in_w, in_h), self.decode_reduction_margin))
            image, factor = self._load(inst, index, reduction)
            if image is not None and self.decode_device == "cuda":
                sample = self._make_sample(inst, None, rng, index, plan)
                sample["encoded"] = torch.from_numpy(image)  # the file's bytes, in a buffer of their own
                sample["crop_matrix"] = torch.from_numpy(np.asarray(plan[1], dtype=np.float64))
                sample["input_size"] = torch.tensor(self.input_size, dtype=torch.int64)
                if self.photometric:  # the batch's draws come from its samples' seeds (gpu_pipeline)
                    seed = self._rng(original, attempt, _ALBUMENTATIONS_STREAM).integers(2**63 - 1)
                    sample["photometric_seed"] = torch.tensor(int(seed), dtype=torch.int64)
                return sample
            if image is not None:
                return self._make_sample(inst, image, rng, index, plan, factor,
                                         albumentations_rng=self._rng(original, attempt, _ALBUMENTATIONS_STREAM))
            # A fresh stream of this attempt redraws the index, as before the box moved up.
            index = int(self._rng(original, attempt).integers(len(self)))
        raise BadDataError(f"no decodable image found after {len(self) + 1} draws")

    def _plan_crop(self, inst: Instance, rng: np.random.Generator, row: int | None = None):
        """Box jitter and the image -> crop matrix (flip included) of one sample; ``row``: the
        instance's row (its precomputed box), else the box is computed from ``inst``."""
        in_h, in_w = self.input_size
        if row is None:
            center, scale = geometry.bbox_xywh_to_center_scale(inst.bbox, self.aspect_ratio, self.padding)
        else:
            center, scale = self._box_center[row], self._box_scale[row]
        box = self.box_jitter(center, scale, inst.keypoints[:, :2], inst.keypoints[:, 2] > 0, rng)
        matrix = geometry.crop_matrix(box.center, box.scale, box.rotation, (in_w, in_h), self.convention)
        if box.flipped:
            matrix = geometry.compose_affine(geometry.flip_matrix(in_w), matrix)
        return box, matrix

    def _make_sample(self, inst: Instance, image_bgr: np.ndarray, rng: np.random.Generator,
                     index: int, plan=None, factor: int = 1,
                     albumentations_rng: np.random.Generator | None = None) -> dict[str, Any]:
        """``plan``: ``(box, matrix)`` of :meth:`_plan_crop` (sampled here when ``None``);
        ``image_bgr`` is decoded at ``1 / factor`` of the image's size; ``None``: no ``image``
        (the device makes it, see ``decode_device``). ``albumentations_rng``: the sample's stream of the
        albumentations stage (needed when there is an image)."""
        in_h, in_w = self.input_size
        k = self.info.num_keypoints
        box, matrix = self._plan_crop(inst, rng) if plan is None else plan
        labelled = inst.keypoints[:, 2] > 0
        crop = None
        if image_bgr is not None:
            crop = warp_crop(image_bgr, reduced_matrix(matrix, factor), (in_w, in_h))
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        kps_crop = geometry.transform_points(inst.keypoints[:, :2], matrix).astype(np.float32)
        if box.flipped:
            kps_crop = kps_crop[self.info.flip_index]
            labelled = labelled[self.info.flip_index]
        if self.crop_augmenter:  # (never with image_bgr None: the device path has its own)
            crop, kps_crop, swaps = self.crop_augmenter(crop, kps_crop, albumentations_rng)
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
        sample = {} if crop is None else {"image": to_chw(crop)}
        return sample | {
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
