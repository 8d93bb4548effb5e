"""Evaluation protocols: how per-instance predictions become COCO results (docs/pretrained.md,
"Evaluation protocols")."""

from .protocols import PROTOCOLS, mmpose_box_areas, oks_nms, select_instances

__all__ = ["PROTOCOLS", "mmpose_box_areas", "oks_nms", "select_instances"]
