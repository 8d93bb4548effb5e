"""The training objective: weighted sum of the fused heatmap loss and the auxiliary terms.

total = heatmap_weight    * heatmap_loss(pred, keypoints, weights)          (kpfast.ops, fused)
      + visibility_weight * BCE(visibility logits, keypoint labelled)      (needs the head)
      + coordinate_weight * L1(soft_argmax(pred), keypoints)  over visible keypoints
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kpfast.engine.config import LossConfig

__all__ = ["TrainingObjective", "resolve_sigma"]


def resolve_sigma(cfg: LossConfig, heatmap_size: tuple[int, int]) -> float:
    """``cfg.sigma``, scaled with the heatmap size (relative to 64x48) when adaptive."""
    if not cfg.adaptive_sigma:
        return float(cfg.sigma)
    from kpfast.ops import adaptive_sigma

    return float(adaptive_sigma(tuple(heatmap_size), cfg.sigma))


class TrainingObjective:
    """Callable computing ``(total_loss, {term: value})`` from model outputs and a batch."""

    def __init__(self, cfg: LossConfig, heatmap_size: tuple[int, int], backend: str = "auto"):
        self.cfg = cfg
        self.heatmap_size = tuple(heatmap_size)
        self.backend = backend
        self.sigma = resolve_sigma(cfg, self.heatmap_size)

    def heatmap_term(self, heatmaps: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        from kpfast.ops import heatmap_loss

        cfg = self.cfg
        kwargs = dict(
            sigma=self.sigma,
            encoding=cfg.encoding,
            kind=cfg.kind,
            keypoint_weight=cfg.keypoint_weight,
            background_weight=cfg.background_weight,
            threshold=cfg.threshold,
            l1_weight=cfg.l1_weight,
            backend=self.backend,
        )
        if cfg.kind == "focal":
            kwargs.update(alpha=cfg.alpha, gamma=cfg.gamma)
        if cfg.ohkm_topk is None:
            return heatmap_loss(heatmaps, keypoints, weights, reduction="mean", **kwargs)
        # Online hard keypoint mining: per-keypoint losses, keep each sample's top-k.
        per_keypoint = heatmap_loss(heatmaps, keypoints, weights, reduction="none", **kwargs)  # (B, K)
        k = min(cfg.ohkm_topk, per_keypoint.shape[1])
        return per_keypoint.topk(k, dim=1).values.mean()

    def __call__(self, outputs: dict, batch: dict) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        heatmaps = outputs["heatmaps"]
        keypoints = batch["keypoints"].to(heatmaps.device, torch.float32)
        weights = batch["weights"].to(heatmaps.device, torch.float32)
        if tuple(heatmaps.shape[-2:]) != self.heatmap_size:
            raise ValueError(
                f"heatmaps: expected spatial size {self.heatmap_size}, got {tuple(heatmaps.shape[-2:])}"
            )
        parts: dict[str, torch.Tensor] = {}
        total = heatmaps.new_zeros((), dtype=torch.float32)
        if cfg.heatmap_weight > 0:
            parts["heatmap"] = self.heatmap_term(heatmaps, keypoints, weights).float()
            total = total + cfg.heatmap_weight * parts["heatmap"]
        labelled = (weights >= 0.5).float()
        if cfg.visibility_weight > 0:
            logits = outputs.get("visibility")
            if logits is None:
                raise ValueError(
                    "loss.visibility_weight > 0 needs the visibility head: set model.visibility_head: true"
                )
            target = batch.get("visibility")
            target = labelled if target is None else (target.to(logits.device) > 0).float()
            parts["visibility"] = F.binary_cross_entropy_with_logits(logits.float(), target)
            total = total + cfg.visibility_weight * parts["visibility"]
        if cfg.coordinate_weight > 0:
            from kpfast.ops import soft_argmax

            coords, _ = soft_argmax(heatmaps.float(), beta=cfg.soft_argmax_beta, backend=self.backend)
            error = (coords - keypoints).abs().sum(-1)  # (B, K) L1 in heatmap pixels
            error = torch.where(labelled > 0, error, torch.zeros_like(error))  # drops NaN of unlabelled
            parts["coordinate"] = error.sum() / labelled.sum().clamp(min=1.0)
            total = total + cfg.coordinate_weight * parts["coordinate"]
        return total, parts
