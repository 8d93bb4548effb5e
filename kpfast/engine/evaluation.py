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

from kpfast.data.coco import load_coco_gt
from kpfast.evaluation.protocols import select_instances

__all__ = [
    "COCO_STAT_NAMES",
    "instance_score",
    "evaluate_coco",
    "pck_and_epe",
    "gt_as_results",
    "load_coco_gt",
    "Evaluator",
    "evaluate_model",
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


# --------------------------------------------------------------------------- model evaluation


def _rank_indices(length: int, rank: int, world_size: int) -> list[int]:
    # Strided split without padding: every instance is evaluated exactly once.
    return list(range(rank, length, world_size))


def predict_instances(model, dataset, config, device, dataset_info, rank: int = 0, world_size: int = 1) -> list[dict]:
    """Run the model over (this rank's share of) ``dataset``; one record per instance.

    Each record: image_id, keypoints (K, 3 = x, y, score) in image pixels, box_score, area,
    bbox (x, y, w, h), gt_keypoints (K, 2) in image pixels and gt_weights (K,).
    """
    from kpfast.data import LoaderConfig, build_loader, split_meta
    from kpfast.inference import Predictor

    loader = build_loader(dataset, LoaderConfig(batch_size=config.eval.batch_size, num_workers=config.data.num_workers,
                                                pin_memory=device.type == "cuda"),
                          sampler=_rank_indices(len(dataset), rank, world_size), train=False)
    predictor = Predictor.from_config(config, model, device, dataset_info.flip_pairs)
    records: list[dict] = []
    for batch in loader:
        metas = split_meta(batch)
        image_xy, scores = predictor.predict_batch(batch, metas)
        gt_xy = predictor.codec.heatmap_to_image(batch["keypoints"].double().numpy(),
                                                 predictor.codec.sample_matrices(metas))
        gt_w = batch["weights"].double().numpy()
        for i, meta in enumerate(metas):
            records.append(
                {
                    "image_id": int(meta["image_id"]),
                    "keypoints": np.concatenate([image_xy[i], scores[i][:, None]], axis=1),
                    "box_score": float(meta.get("score", 1.0)),
                    "area": float(meta.get("area") or 0.0),
                    "bbox": [float(v) for v in meta["bbox"]],
                    "gt_keypoints": gt_xy[i],
                    "gt_weights": gt_w[i],
                }
            )
    return records


def records_to_results(records: list[dict], config, sigmas, category_id: int = 1) -> list[dict]:
    """Rescore instances, OKS-NMS per image as eval.protocol says, and write COCO results entries."""
    by_image: dict[int, list[dict]] = {}
    for rec in records:
        by_image.setdefault(rec["image_id"], []).append(rec)
    results = []
    for image_id in sorted(by_image):
        instances = by_image[image_id]
        threshold = config.eval.keypoint_score_threshold
        scores = np.array([instance_score(r["keypoints"][:, 2], r["box_score"], threshold) for r in instances])
        keep = select_instances(instances, scores, protocol=config.eval.protocol,
                                use_gt_boxes=config.data.use_gt_boxes, nms_threshold=config.eval.oks_nms_threshold,
                                sigmas=sigmas, input_size=config.data.input_size)
        for index in keep:
            rec = instances[index]
            results.append(
                {
                    "image_id": image_id,
                    "category_id": category_id,
                    "keypoints": [float(v) for v in rec["keypoints"].reshape(-1)],
                    "score": float(scores[index]),
                }
            )
    return results


def evaluate_model(
    model,
    dataset,
    config,
    device,
    dataset_info,
    coco_gt=None,
    distributed: bool = False,
    results_out: list | None = None,
) -> dict:
    """COCO AP/AR of ``model`` on ``dataset`` (plus PCK and EPE when boxes are ground truth).

    ``coco_gt``: the ground truth as a pycocotools COCO; None loads it from the dataset's
    ``ann_file`` (on the rank that computes the metrics only). Under DDP every rank predicts its
    share; records are gathered with ``all_gather_object``, rank 0 computes the metrics and they
    are broadcast so that every rank agrees (early stopping).
    """
    from kpfast.engine import runtime as dist_utils

    rank, world = (dist_utils.get_rank(), dist_utils.get_world_size()) if distributed else (0, 1)
    records = predict_instances(model, dataset, config, device, dataset_info, rank, world)
    if distributed:
        records = [r for part in dist_utils.all_gather_objects(records) for r in part]
    metrics: dict = {}
    if rank == 0:
        if coco_gt is None:
            coco_gt = load_coco_gt(dataset.ann_file)
        sigmas = np.asarray(dataset_info.sigmas, dtype=np.float64)
        results = records_to_results(records, config, sigmas)
        metrics = evaluate_coco(coco_gt, results, sigmas)
        metrics["num_instances"] = len(records)
        metrics["num_results"] = len(results)
        if config.data.use_gt_boxes and records:
            pred = np.stack([r["keypoints"][:, :2] for r in records])
            gt = np.stack([r["gt_keypoints"] for r in records])
            visible = np.stack([r["gt_weights"] for r in records]) >= 0.5
            wh = np.array([[r["bbox"][2], r["bbox"][3]] for r in records])
            pck = pck_and_epe(pred, gt, visible, wh, config.eval.pck_threshold)
            metrics["PCK"] = pck["PCK"]
            metrics["EPE"] = pck["EPE"]
        if results_out is not None:
            results_out.extend(results)
    if distributed:
        metrics = dist_utils.broadcast_object(metrics)
    return metrics


class Evaluator:
    """Evaluates models on one validation set; loads its ground truth once, where it evaluates.

    The COCO index of the dataset's annotation file is built on first use, on the rank that
    computes the metrics, and kept for the following evaluations (not held by the dataset or
    copied into data-loader workers).
    """

    def __init__(self, dataset, config, device, dataset_info, distributed: bool = False):
        self.dataset = dataset
        self.config = config
        self.device = device
        self.dataset_info = dataset_info
        self.distributed = distributed
        self._coco_gt = None

    @property
    def coco_gt(self):
        if self._coco_gt is None:
            self._coco_gt = load_coco_gt(self.dataset.ann_file)
        return self._coco_gt

    def __call__(self, model, results_out: list | None = None) -> dict:
        from kpfast.engine import runtime as dist_utils

        on_metrics_rank = not self.distributed or dist_utils.get_rank() == 0
        return evaluate_model(model, self.dataset, self.config, self.device, self.dataset_info,
                              coco_gt=self.coco_gt if on_metrics_rank else None,
                              distributed=self.distributed, results_out=results_out)
