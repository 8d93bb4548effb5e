"""HeatmapLoss: the fused heatmap loss as an nn.Module, with presets and online hard keypoint mining."""

from __future__ import annotations

import torch
from torch import nn

from kpfast.ops import heatmap_loss
from kpfast.ops._checks import check_choice, check_int, check_sigma_type
from kpfast.ops._inputs import LossOptions
from kpfast.vocabulary import ENCODINGS

PRESETS = {
    # The weighted MSE of top-down heatmap training: keypoint pixels (t > 0.1) weigh 15x.
    "weighted_mse": dict(kind="mse", keypoint_weight=15.0, background_weight=1.0, threshold=0.1, l1_weight=0.0),
    # Sigmoid focal loss on logits (alpha 0.25, gamma 2) plus 0.1 x L1 on the probabilities.
    "focal": dict(kind="focal", alpha=0.25, gamma=2.0, l1_weight=0.1),
}


class HeatmapLoss(nn.Module):
    """Weighted heatmap loss computed straight from keypoints (see :func:`kpfast.ops.heatmap_loss`).

    Configured from plain values, so it can be built from a YAML config::

        criterion = HeatmapLoss.from_preset("focal", ohkm_topk=8)
        loss = criterion(logits, keypoints, visibility)

    Args:
        kind, alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight,
        reduction, sigma, encoding, backend: as :func:`kpfast.ops.heatmap_loss`.
        ohkm_topk: online hard keypoint mining: keep, per sample, the ``ohkm_topk`` keypoints with
            the largest per-keypoint loss (``reduction="none"``) and average (``"mean"``) or sum
            (``"sum"``) those; the other keypoints get no gradient. None disables it.
    """

    def __init__(self, kind: str = "focal", *, sigma=2.0, encoding: str = "udp", alpha: float | None = None,
                 gamma: float = 2.0, beta: float = 4.0, keypoint_weight: float = 15.0, background_weight: float = 1.0,
                 threshold: float = 0.1, l1_weight: float | None = None, reduction: str = "mean",
                 ohkm_topk: int | None = None, backend: str | None = None) -> None:
        super().__init__()
        self.config = LossOptions.build(kind, alpha, gamma, beta, keypoint_weight, background_weight, threshold,
                                        l1_weight, reduction).as_dict()
        self.encoding = check_choice("encoding", encoding, ENCODINGS)
        check_sigma_type(sigma)
        self.sigma = sigma
        if ohkm_topk is not None:
            check_int("ohkm_topk", ohkm_topk, low=1)
            if reduction == "none":
                raise ValueError("reduction: expected 'mean' or 'sum' with ohkm_topk (hard keypoint mining "
                                 "reduces the selected keypoints), got 'none'")
        self.ohkm_topk = ohkm_topk
        self.backend = backend

    @classmethod
    def weighted_mse(cls, **overrides) -> "HeatmapLoss":
        """Weighted MSE: keypoint weight 15, background 1, threshold 0.1."""
        return cls.from_preset("weighted_mse", **overrides)

    @classmethod
    def focal(cls, **overrides) -> "HeatmapLoss":
        """Sigmoid focal loss (alpha 0.25, gamma 2) + 0.1 x L1."""
        return cls.from_preset("focal", **overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "HeatmapLoss":
        """A preset by name (``"weighted_mse"`` or ``"focal"``), with any argument overridden."""
        check_choice("name", name, tuple(PRESETS))
        settings = {**PRESETS[name], **overrides}
        return cls(settings.pop("kind"), **settings)

    def forward(self, pred: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None = None,
                sigma=None) -> torch.Tensor:
        """Loss of ``pred (B, K, H, W)`` against targets rendered from ``keypoints``.

        ``sigma`` (optional) overrides the module's for this call."""
        sigma = self.sigma if sigma is None else sigma
        options = {k: v for k, v in self.config.items() if k != "reduction"}
        if self.ohkm_topk is None:
            return heatmap_loss(pred, keypoints, weights, sigma=sigma, encoding=self.encoding,
                                reduction=self.config["reduction"], backend=self.backend, **options)
        per_keypoint = heatmap_loss(pred, keypoints, weights, sigma=sigma, encoding=self.encoding, reduction="none",
                                    backend=self.backend, **options)
        topk = min(self.ohkm_topk, per_keypoint.shape[1])
        hardest = per_keypoint.topk(topk, dim=1).values if topk > 0 else per_keypoint
        if self.config["reduction"] == "sum":
            return hardest.sum()
        # mmpose's OHKM: the mean of each sample's hardest keypoints, averaged over the batch.
        return hardest.mean() if hardest.numel() else hardest.sum()

    def extra_repr(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.config.items())
        return f"{settings}, sigma={self.sigma}, encoding={self.encoding!r}, ohkm_topk={self.ohkm_topk}"
