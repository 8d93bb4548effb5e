"""Batching: :func:`build_loader` over a dataset with a typed :class:`LoaderConfig` (what the
trainer uses), and the config-dict builders for standalone use of kpfast.data.

Config (all keys optional)::

    data:
      root: null              # null -> the embedded synthetic dataset (kpfast.data.synthetic)
      ann_file: null          # explicit paths override the root layout
      image_dir: null
      train_split: train
      val_split: val
      input_size: [256, 192]  # (H, W)
      heatmap_stride: 4       # or heatmap_size: [64, 48]
      convention: udp         # or standard
      padding: 1.25
      augmentation: default   # dict, "default" or "none" (see kpfast.data.augment)
      detections: null        # COCO results JSON for evaluation boxes; null -> GT boxes
      det_score_threshold: 0.0
      max_bad_fraction: 0.05
      max_image_pixels: 64000000  # larger images (by their header) are never decoded
      decode_reduction_margin: null  # e.g. 1.0: JPEGs decoded at 1/2..1/8 when the crop allows
      decode_device: cpu      # cuda: workers hand over JPEG bytes (kpfast.data.gpu_pipeline)
      dataset_info: {}        # DatasetInfo overrides: sigmas, flip_pairs, skeleton, ...
      batch_size: 32
      num_workers: 2
      seed: 0
      synthetic: {num_train: 2000, num_val: 200, seed: 0}   # when root is null
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import kpfast._require_trainer  # noqa: F401  (first: one line when the trainer's packages are missing)
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from .coco import CocoKeypointDataset
from .config import LoaderConfig

__all__ = ["collate_samples", "split_meta", "build_dataset", "build_dataloader", "build_loader"]

_DATASET_KEYS = {"ann_file", "image_dir", "input_size", "heatmap_size", "heatmap_stride",
                 "convention", "padding", "dataset_info", "max_bad_fraction", "seed",
                 "det_score_threshold", "category_id", "max_image_pixels", "protocol",
                 "decode_reduction_margin", "decode_device"}
_KNOWN_KEYS = _DATASET_KEYS | {"root", "train_split", "val_split", "augmentation", "detections",
                               "batch_size", "num_workers", "synthetic", "pin_memory",
                               "persistent_workers", "prefetch_factor", "val_batch_size",
                               "val_ann_file", "val_image_dir"}


def collate_samples(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch: ``image (B,3,H,W)``, ``keypoints (B,K,2)``, ``weights (B,K)``;
    numeric ``meta`` fields become tensors (``center (B,2)``, ``image_id (B,)`` int64,
    ``flipped (B,)`` bool, ...); other meta values stay lists."""
    if not samples:
        raise ValueError("collate_samples needs at least one sample, got an empty list")
    batch: dict[str, Any] = {key: torch.stack([s[key] for s in samples])
                             for key in ("image", "keypoints", "weights", "crop_matrix", "input_size",
                                         "photometric_seed")
                             if key in samples[0]}
    if "encoded" in samples[0]:  # decode_device="cuda": JPEG bytes of different lengths
        batch["encoded"] = [s["encoded"] for s in samples]
    meta = {}
    for key in samples[0]["meta"]:
        values = [s["meta"][key] for s in samples]
        first = values[0]
        if isinstance(first, bool):
            meta[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            meta[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            meta[key] = torch.tensor(values, dtype=torch.float32)
        elif isinstance(first, np.ndarray):  # one stack, not a tensor per sample (a quarter of the time)
            meta[key] = torch.from_numpy(np.stack(values))
        elif isinstance(first, torch.Tensor):
            meta[key] = torch.stack(values)
        else:
            meta[key] = values
    batch["meta"] = meta
    return batch


def split_meta(batch: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inverse of :func:`collate_samples` for ``meta``: one plain dict per sample, tensors as
    Python numbers (0-d) or float64 arrays."""
    size = int(batch["image"].shape[0])
    out: list[dict[str, Any]] = [dict() for _ in range(size)]
    for key, values in batch["meta"].items():
        for i in range(size):
            value = values[i]
            if torch.is_tensor(value):
                value = value.item() if value.ndim == 0 else value.double().numpy()
            out[i][key] = value
    return out


def _data_section(config: Mapping[str, Any]) -> dict[str, Any]:
    cfg = dict(config.get("data", config))
    unknown = set(cfg) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown data config key(s) {sorted(unknown)}; known: {sorted(_KNOWN_KEYS)}")
    return cfg


def build_dataset(config: Mapping[str, Any], split: str = "train", train: bool | None = None
                  ) -> CocoKeypointDataset:
    """Build a :class:`CocoKeypointDataset` from a config dict (the whole config or its
    ``data`` section). ``split`` is ``"train"`` or ``"val"``; ``train`` defaults to
    ``split == "train"`` (augmentation on, GT boxes). Evaluation uses ``detections`` if given."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    cfg = _data_section(config)
    train = (split == "train") if train is None else bool(train)
    root = cfg.get("root")
    if root is None and cfg.get("ann_file") is None:
        from .synthetic import ensure_synthetic_dataset

        root = ensure_synthetic_dataset(**dict(cfg.get("synthetic") or {}))
    kwargs = {k: v for k, v in cfg.items() if k in _DATASET_KEYS and v is not None}
    if split == "val":
        kwargs.pop("ann_file", None)
        kwargs.pop("image_dir", None)
        if cfg.get("val_ann_file"):
            kwargs["ann_file"] = cfg["val_ann_file"]
        if cfg.get("val_image_dir"):
            kwargs["image_dir"] = cfg["val_image_dir"]
    split_name = cfg.get(f"{split}_split", split)
    return CocoKeypointDataset(root, split_name, train=train,
                               augmentation=cfg.get("augmentation", "default"),
                               detections=None if train else cfg.get("detections"), **kwargs)


def prepare_fork_for_workers(num_workers: int) -> None:
    """Make OpenCV single-threaded in this (parent) process before forking data workers.

    A worker forked while OpenCV's thread pool exists inherits its locks in whatever state they
    were; calling ``cv2.setNumThreads`` in the child then deadlocks (pthread_cond_destroy on a
    condition variable owned by a thread that no longer exists). Shrinking the pool before the
    fork leaves the children nothing to tear down; the parent does no image work while workers
    load the data.
    """
    if num_workers > 0:
        cv2.setNumThreads(1)


def _worker_init(_worker_id: int) -> None:
    # Each worker is one core's worth of work: OpenCV's own thread pool would oversubscribe.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


def build_dataloader(config: Mapping[str, Any], split: str = "train", *,
                     dataset: CocoKeypointDataset | None = None, sampler=None,
                     train: bool | None = None) -> DataLoader:
    """A DataLoader over :func:`build_dataset` (the dict form of the config above); see
    :func:`build_loader`."""
    cfg = _data_section(config)
    train = (split == "train") if train is None else bool(train)
    dataset = dataset if dataset is not None else build_dataset(config, split, train)
    batch_size = int(cfg.get("batch_size", 32) if train else cfg.get("val_batch_size", cfg.get("batch_size", 32)))
    loader = LoaderConfig(batch_size=batch_size, num_workers=int(cfg.get("num_workers", 2)),
                          pin_memory=bool(cfg.get("pin_memory", torch.cuda.is_available())),
                          persistent_workers=bool(cfg.get("persistent_workers", True)),
                          prefetch_factor=int(cfg.get("prefetch_factor", 2)))
    return build_loader(dataset, loader, sampler=sampler, train=train)


def build_loader(dataset, loader: LoaderConfig, *, sampler=None, train: bool) -> DataLoader:
    """A DataLoader batching ``dataset`` with :func:`collate_samples`.

    Training loaders shuffle (unless a ``sampler``, e.g. a DistributedSampler, is given) and
    drop the last partial batch; evaluation loaders keep order and every sample. Call
    ``loader.dataset.set_epoch(e)`` before each epoch and ``loader.dataset.epoch_counts()`` after
    it to read (and log) the decode failures of all workers.
    """
    extra = {}
    if loader.num_workers > 0:
        extra["persistent_workers"] = loader.persistent_workers
        extra["prefetch_factor"] = loader.prefetch_factor
        extra["worker_init_fn"] = _worker_init
        prepare_fork_for_workers(loader.num_workers)
    return DataLoader(dataset, batch_size=loader.batch_size, shuffle=train and sampler is None,
                      sampler=sampler, num_workers=loader.num_workers, collate_fn=collate_samples,
                      drop_last=train, pin_memory=loader.pin_memory, **extra)
