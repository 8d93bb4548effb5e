"""The training objective: weighted sum of the fused heatmap loss and the auxiliary terms.

total = heatmap_weight    * kpfast.nn.HeatmapLoss(pred, keypoints, weights)  (fused op; OHKM there)
      + visibility_weight * BCE(visibility logits, keypoint labelled)       (needs the head)
      + coordinate_weight * L1(soft_argmax(pred), keypoints)  over visible keypoints

Every loss option of :class:`kpfast.engine.config.LossConfig` goes to ``HeatmapLoss`` (built by the
run's heatmap codec, kpfast.codecs, with its sigma and encoding), which checks it. The objective
never reads a tensor value on the host (no device sync).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kpfast.codecs import HeatmapCodec
from kpfast.engine.config import LossConfig

__all__ = ["TrainingObjective"]


class TrainingObjective:
    """Callable computing ``(total_loss, {term: value})`` from model outputs and a batch."""

    def __init__(self, cfg: LossConfig, codec: HeatmapCodec):
        """``codec`` gives the heatmap size, sigma, encoding and ops backend (kpfast.codecs)."""
        self.cfg = cfg
        self.heatmap_size = codec.heatmap_size
        self.backend = codec.backend
        self.sigma = codec.sigma
        self.heatmap_loss = codec.loss(cfg.kind, alpha=cfg.alpha, gamma=cfg.gamma, beta=cfg.beta,
                                       keypoint_weight=cfg.keypoint_weight, background_weight=cfg.background_weight,
                                       threshold=cfg.threshold, l1_weight=cfg.l1_weight, reduction="mean",
                                       ohkm_topk=cfg.ohkm_topk)

    def term_names(self) -> list[str]:
        """The names of the parts returned by ``__call__``, in order."""
        cfg = self.cfg
        names = []
        if cfg.heatmap_weight > 0:
            names.append("heatmap")
        if cfg.visibility_weight > 0:
            names.append("visibility")
        if cfg.coordinate_weight > 0:
            names.append("coordinate")
        return names

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
            parts["heatmap"] = self.heatmap_loss(heatmaps, keypoints, weights).float()
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
