"""The dataset registry: ``data.dataset`` in a config names a factory here (docs/data.md,
"Datasets").

A factory takes the typed :class:`~kpfast.data.config.DataConfig`, the split ("train" or "val")
and the build options, and returns a map-style dataset with an ``info``
(:class:`~kpfast.data.info.DatasetInfo`) and an ``ann_file`` (the COCO-format ground truth of the
split, for evaluation). This module imports nothing heavy, so a config validates its dataset name
without loading OpenCV.
"""

from __future__ import annotations

from kpfast.schema import Registry

__all__ = ["DATASETS", "register_dataset", "create_dataset"]

# name -> factory(config, split, *, train, convention, seed) -> dataset
DATASETS = Registry("dataset")
# Decorator: @register_dataset("name") adds a factory to DATASETS.
register_dataset = DATASETS.register


def create_dataset(config, split: str, *, train: bool, convention: str = "udp", seed: int = 0,
                   protocol: str = "kpfast"):
    """The dataset ``config.dataset`` names, for ``split`` ("train" or "val"). ``protocol`` is the
    evaluation protocol whose ground-truth box clip the split applies (docs/pretrained.md,
    "Evaluation protocols"); a factory takes it as a keyword."""
    if split not in ("train", "val"):
        raise ValueError(f"split: expected 'train' or 'val', got {split!r}")
    factory = DATASETS.get(config.dataset)
    if factory is None:
        raise ValueError(f"data.dataset: expected one of {sorted(DATASETS)}, got {config.dataset!r}")
    return factory(config, split, train=train, convention=convention, seed=seed, protocol=protocol)


@register_dataset("coco")
def _coco(config, split: str, *, train: bool, convention: str, seed: int, protocol: str = "kpfast"):
    """Any COCO-format keypoint set under ``config.root``: the number of keypoints, names, flip
    pairs and skeleton come from the annotation file's category, overridable (with the OKS
    sigmas, which COCO files do not carry for other categories) by
    ``dataset_options.dataset_info``."""
    if config.root is None:
        raise ValueError("data.root: required for dataset 'coco' (pass --data_root)")
    return _coco_layout(config.root, config, split, train=train, convention=convention, seed=seed,
                        protocol=protocol)


@register_dataset("synthetic")
def _synthetic(config, split: str, *, train: bool, convention: str, seed: int, protocol: str = "kpfast"):
    """The generated COCO-format set (kpfast/data/synthetic.py), cached under ``config.root``."""
    from kpfast.data.synthetic import ensure_synthetic_dataset

    root = ensure_synthetic_dataset(root=config.root, num_train=config.synthetic_num_train,
                                    num_val=config.synthetic_num_val, seed=config.synthetic_seed)
    return _coco_layout(root, config, split, train=train, convention=convention, seed=seed, protocol=protocol)


def _coco_layout(root, config, split: str, *, train: bool, convention: str, seed: int, protocol: str):
    from kpfast.data.coco import CocoKeypointDataset

    from_config = dict(
        augmentation=config.augmentation if train else "none",
        detections=None if (train or config.use_gt_boxes) else config.detections,
        det_score_threshold=config.det_score_threshold, input_size=list(config.input_size),
        convention=convention, seed=seed, protocol=protocol,
        # Evaluation decodes on the CPU and in full: a checkpoint's AP is the one the full-resolution
        # pipeline (and MMPose) measures (docs/data.md, "Config").
        decode_device=config.decode_device if train else "cpu",
        decode_reduction_margin=config.decode_reduction_margin if train else None)
    taken = sorted(set(config.dataset_options) & set(from_config))
    if taken:
        raise ValueError(f"data.dataset_options: {taken} are set by the run's config (data.*, train.seed, "
                         f"eval.protocol, loss.encoding), not here; got {taken[0]}={config.dataset_options[taken[0]]!r}")
    return CocoKeypointDataset(str(root), config.train_split if split == "train" else config.val_split,
                               train=train, **from_config, **config.dataset_options)
