"""The two evaluation protocols, selected by name (``eval.protocol``, docs/pretrained.md,
"Evaluation protocols").

Both rescore an instance as ``box score * mean(keypoint scores above the threshold)`` and run a
greedy OKS-NMS per image at ``eval.oks_nms_threshold``. They differ where MMPose 1.3.2's
``CocoMetric`` differs from kpfast's own choice:

==================  ===============================  =========================================
                    ``kpfast``                       ``mmpose``
==================  ===============================  =========================================
NMS area            the kept (reference) instance's  the mean of the two instances' areas, each
                    area: the annotation's area      the padded (x1.25), aspect-fixed crop box
                    (GT boxes) or the detector box   (``prod(bbox_scale)``)
NMS with GT boxes   no (every GT box is a person)    yes (as with detector boxes)
order of ties       first instance first (stable)    ``argsort()[::-1]``: the later one first
GT box clip         [0, W] x [0, H]                  [0, W-1] x [0, H-1] (kpfast.data.coco)
==================  ===============================  =========================================

kpfast keeps its own rule by default: the detector (or annotation) box is the person's size,
which is what COCO's OKS divides by, while the padded crop box is an artefact of the network's
input; and NMS between ground-truth boxes can only remove true persons.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kpfast import geometry

__all__ = ["PROTOCOLS", "mmpose_box_areas", "oks_nms", "select_instances"]

PROTOCOLS = ("kpfast", "mmpose")
# MMPose's GetBBoxCenterScale padding, the same as kpfast's crops (docs/design.md §Geometry).
_BOX_PADDING = 1.25


def _check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"eval.protocol: expected one of {PROTOCOLS}, got {protocol!r}")


def oks_nms(keypoints: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas: np.ndarray,
            threshold: float, protocol: str) -> list[int]:
    """Greedy OKS-NMS of one image's ``keypoints`` (N, K, 3 = x, y, score): kept indices, best first.

    ``kpfast``: the OKS of a pair divides by the kept instance's area and equal scores keep file
    order; ``mmpose``: it divides by the pair's mean area and equal scores are taken in
    ``argsort()[::-1]`` order, as ``mmpose.evaluation.functional.oks_nms`` does.
    """
    _check_protocol(protocol)
    keypoints = np.asarray(keypoints, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    if scores.size == 0:
        return []
    if sigmas.shape != keypoints.shape[1:2]:
        raise ValueError(f"sigmas: expected shape ({keypoints.shape[1]},), got {sigmas.shape}")
    xy = keypoints[..., :2]
    d2 = ((xy[:, None] - xy[None, :]) ** 2).sum(-1)  # (N, N, K)
    pair_area = areas[:, None] if protocol == "kpfast" else (areas[:, None] + areas[None, :]) / 2.0
    e = d2 / ((2.0 * sigmas) ** 2) / (pair_area[..., None] + np.spacing(1)) / 2.0
    oks = np.exp(-e).mean(-1)
    order = list(np.argsort(-scores, kind="stable") if protocol == "kpfast" else np.argsort(scores)[::-1])
    keep = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        order = [j for j in order if oks[best, j] <= threshold]
    return keep


def mmpose_box_areas(boxes_xywh: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """MMPose's instance area: the crop box (padded by 1.25, widened to the input's aspect ratio)."""
    height, width = input_size
    _, scale = geometry.bbox_xywh_to_center_scale(np.asarray(boxes_xywh, np.float64).reshape(-1, 4),
                                                  width / height, _BOX_PADDING)
    return scale[:, 0] * scale[:, 1]


def _kpfast_areas(records: Sequence[dict]) -> np.ndarray:
    return np.array([r["area"] if r["area"] > 0 else r["bbox"][2] * r["bbox"][3] for r in records])


def select_instances(records: Sequence[dict], scores: np.ndarray, *, protocol: str, use_gt_boxes: bool,
                     nms_threshold: float | None, sigmas: np.ndarray, input_size: Sequence[int]) -> list[int]:
    """The indices of one image's ``records`` (dicts with ``keypoints`` (K, 3), ``bbox`` xywh,
    ``area``) that the protocol reports, given their rescored ``scores``."""
    _check_protocol(protocol)
    everyone = list(range(len(records)))
    if nms_threshold is None or len(records) < 2 or (use_gt_boxes and protocol == "kpfast"):
        return everyone
    keypoints = np.stack([r["keypoints"] for r in records])
    if protocol == "kpfast":
        areas = _kpfast_areas(records)
    else:
        areas = mmpose_box_areas(np.array([r["bbox"] for r in records]), input_size)
    return oks_nms(keypoints, scores, areas, sigmas, nms_threshold, protocol)
