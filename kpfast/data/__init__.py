"""kpfast.data: COCO top-down keypoint loading, augmentation and the synthetic default dataset.

The loader returns images and keypoints (in heatmap pixels), never heatmaps: targets are
rendered by kpfast's fused ops. Main entry points::

    from kpfast.data import build_dataloader, collate_samples, CocoKeypointDataset, DatasetInfo
    loader = build_dataloader({"data": {"root": None, "input_size": [128, 96]}}, "train")
"""

from .augment import DEFAULT_AUGMENTATION, NO_AUGMENTATION, resolve_augmentation_config
from .coco import BadDataError, CocoKeypointDataset, resolve_coco_paths
from .info import COCO_KEYPOINT_NAMES, COCO_SIGMAS, COCO_SKELETON, DatasetInfo
from .loader import build_dataloader, build_dataset, collate_samples
from .validate import AnnotationError, validate_detections, validate_keypoint_annotations

__all__ = [
    "AnnotationError", "BadDataError", "CocoKeypointDataset", "DatasetInfo",
    "COCO_KEYPOINT_NAMES", "COCO_SIGMAS", "COCO_SKELETON", "DEFAULT_AUGMENTATION",
    "NO_AUGMENTATION", "build_dataloader", "build_dataset", "collate_samples",
    "ensure_synthetic_dataset", "generate_synthetic_dataset", "resolve_augmentation_config",
    "resolve_coco_paths", "validate_detections", "validate_keypoint_annotations",
]


def __getattr__(name):
    # Imported lazily so `python -m kpfast.data.synthetic` does not find the module pre-imported.
    if name in ("ensure_synthetic_dataset", "generate_synthetic_dataset"):
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module 'kpfast.data' has no attribute {name!r}")
