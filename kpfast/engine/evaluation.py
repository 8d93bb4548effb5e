"""Keypoint evaluation: COCO OKS AP (pycocotools), OKS-NMS, box-score rescoring, PCK and EPE.

The top-down protocol (HRNet / MMPose): for each person box the network predicts K keypoints
with scores; the instance score is ``box_score * mean(keypoint scores above a threshold)``;
with detector boxes, overlapping instances of one image are suppressed by OKS-NMS; the
remaining instances go to pycocotools' ``COCOeval(iouType="keypoints")`` with the dataset's
OKS sigmas.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Iterable, Sequence

import numpy as np

__all__ = [
    "COCO_STAT_NAMES",
    "instance_score",
    "oks_matrix",
    "oks_nms",
    "evaluate_coco",
    "pck_and_epe",
    "gt_as_results",
]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def instance_score(keypoint_scores: np.ndarray, box_score: float, threshold: float) -> float:
    """``box_score * mean(keypoint scores > threshold)`` (0 keypoint score when none pass).

    This is the rescoring of HRNet/MMPose's top-down COCO evaluation: a confident box with
    unconfident keypoints ranks below a confident pose.
    """
    scores = np.asarray(keypoint_scores, dtype=np.float64)
    passing = scores[scores > threshold]
    mean = float(passing.mean()) if passing.size else 0.0
    return float(box_score) * mean


def oks_matrix(
    keypoints: np.ndarray, areas: np.ndarray, sigmas: np.ndarray, visibility_threshold: float | None = None
) -> np.ndarray:
    """Pairwise OKS between N predicted instances (N, K, 3 = x, y, score) -> (N, N).

    Follows COCO's OKS with instance ``i`` as the reference (its area and, when
    ``visibility_threshold`` is given, only its keypoints scoring above the threshold).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    areas = np.asarray(areas, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    n, k = keypoints.shape[:2]
    if sigmas.shape != (k,):
        raise ValueError(f"sigmas: expected shape ({k},), got {sigmas.shape}")
    variances = (2.0 * sigmas) ** 2
    xy = keypoints[..., :2]
    d2 = ((xy[:, None] - xy[None, :]) ** 2).sum(-1)  # (N, N, K)
    e = d2 / variances[None, None, :] / (areas[:, None, None] + np.spacing(1)) / 2.0
    terms = np.exp(-e)
    if visibility_threshold is not None:
        mask = keypoints[:, None, :, 2] > visibility_threshold  # reference instance's keypoints
        mask = np.broadcast_to(mask, terms.shape)
        counts = mask.sum(-1)
        out = np.where(counts > 0, (terms * mask).sum(-1) / np.maximum(counts, 1), 0.0)
    else:
        out = terms.mean(-1)
    return out


def oks_nms(
    keypoints: np.ndarray,
    scores: np.ndarray,
    areas: np.ndarray,
    sigmas: np.ndarray,
    threshold: float,
    visibility_threshold: float | None = None,
) -> list[int]:
    """Greedy OKS-NMS over one image's instances; returns kept indices, best score first."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return []
    oks = oks_matrix(keypoints, areas, sigmas, visibility_threshold)
    order = list(np.argsort(-scores, kind="stable"))
    keep = []
    while order:
        best = order.pop(0)
        keep.append(int(best))
        order = [j for j in order if oks[best, j] <= threshold]
    return keep


def evaluate_coco(coco_gt, results: Sequence[dict], sigmas: Iterable[float] | None = None) -> dict:
    """COCO keypoint AP/AR of ``results`` (COCO results format) against ``coco_gt``.

    ``results`` entries: ``{"image_id", "category_id", "keypoints": [x, y, s] * K, "score"}``.
    Returns ``{"AP": ..., "AP50": ..., ..., "ARl": ..., "summary": text}``; with no results every
    stat is 0 (pycocotools cannot load an empty result list).
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        stats = {name: 0.0 for name in COCO_STAT_NAMES}
        stats["summary"] = "no predictions"
        return stats
    results = [dict(r) for r in results]
    image_ids = sorted({int(r["image_id"]) for r in results})
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="keypoints")
        evaluator.params.imgIds = image_ids
        if sigmas is not None:
            sigmas = np.asarray(list(sigmas), dtype=np.float64)
            evaluator.params.kpt_oks_sigmas = sigmas
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = {name: float(max(value, 0.0)) for name, value in zip(COCO_STAT_NAMES, evaluator.stats)}
    stats["summary"] = buffer.getvalue().strip()
    return stats


def pck_and_epe(
    pred_xy: np.ndarray, gt_xy: np.ndarray, visible: np.ndarray, bbox_wh: np.ndarray, threshold: float = 0.2
) -> dict:
    """PCK@threshold and mean end-point error over visible keypoints, in image pixels.

    A keypoint is correct when its distance to the ground truth is below ``threshold`` times the
    longer side of the instance's ground-truth box (``max(w, h)``). EPE is the mean Euclidean
    distance in image pixels. Shapes: pred/gt (N, K, 2), visible (N, K) bool, bbox_wh (N, 2).
    """
    pred_xy = np.asarray(pred_xy, dtype=np.float64)
    gt_xy = np.asarray(gt_xy, dtype=np.float64)
    visible = np.asarray(visible, dtype=bool)
    bbox_wh = np.asarray(bbox_wh, dtype=np.float64)
    if pred_xy.shape != gt_xy.shape or pred_xy.shape[:2] != visible.shape:
        raise ValueError(
            f"pred_xy/gt_xy/visible: shapes disagree ({pred_xy.shape}, {gt_xy.shape}, {visible.shape})"
        )
    if visible.sum() == 0:
        return {"PCK": 0.0, "EPE": float("nan"), "num_keypoints": 0}
    dist = np.linalg.norm(pred_xy - gt_xy, axis=-1)
    norm = np.maximum(bbox_wh.max(axis=-1), 1e-6)[:, None]
    correct = (dist / norm) < threshold
    return {
        "PCK": float(correct[visible].mean()),
        "EPE": float(dist[visible].mean()),
        "num_keypoints": int(visible.sum()),
    }


def gt_as_results(coco_gt, image_ids: Iterable[int] | None = None) -> list[dict]:
    """Ground-truth annotations (with keypoints) written as COCO results, score 1."""
    image_ids = list(image_ids) if image_ids is not None else coco_gt.getImgIds()
    results = []
    for ann in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids, iscrowd=False)):
        if ann.get("num_keypoints", 0) == 0:
            continue
        kps = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        kps[:, 2] = (kps[:, 2] > 0).astype(np.float64)
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "keypoints": kps.reshape(-1).tolist(),
                "score": 1.0,
            }
        )
    return results
