"""kpfast.data: COCO top-down keypoint loading, augmentation and the synthetic default dataset.

The loader returns images and keypoints (in heatmap pixels), never heatmaps: targets are
rendered by kpfast's fused ops. Main entry points::

    from kpfast.data import build_dataloader, collate_samples, CocoKeypointDataset, DatasetInfo
    loader = build_dataloader({"data": {"root": None, "input_size": [128, 96]}}, "train")
"""

# Every public name is imported on first use (PEP 562), not at package import: `python -m
# kpfast.data.coco download ...` and `python -m kpfast.data.synthetic` run those modules as
# __main__, and runpy warns (and would run a second copy) when the package has already imported
# them. Lazy imports also keep `import kpfast.data` light (no cv2/albumentations until needed).
_EXPORTS = {
    "DEFAULT_AUGMENTATION": "augment", "NO_AUGMENTATION": "augment", "resolve_augmentation_config": "augment",
    "BadDataError": "coco", "CocoKeypointDataset": "coco", "resolve_coco_paths": "coco",
    "COCO_KEYPOINT_NAMES": "info", "COCO_SIGMAS": "info", "COCO_SKELETON": "info", "DatasetInfo": "info",
    "build_dataloader": "loader", "build_dataset": "loader", "build_loader": "loader", "collate_samples": "loader", "split_meta": "loader",
    "load_coco_gt": "coco", "DataConfig": "config", "LoaderConfig": "config",
    "DATASETS": "registry", "create_dataset": "registry", "register_dataset": "registry",
    "DataBundle": "bundle", "build_data": "bundle",
    "AnnotationError": "validate", "validate_detections": "validate", "validate_keypoint_annotations": "validate",
    "ensure_synthetic_dataset": "synthetic", "generate_synthetic_dataset": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kpfast.data' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
