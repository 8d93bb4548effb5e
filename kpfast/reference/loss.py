"""Reference fused heatmap loss (docs/design.md, Op 2), in plain PyTorch.

Renders the target with the reference renderer, builds the pixel weights, applies the
elementwise formula and sums each map; autograd gives the gradient. Every kernel backend
computes the same per-map sums without materialising any of these (B, K, H, W) tensors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kpfast import vocabulary
from kpfast.reference.render import gaussian_maps, materialise_sigma, materialise_weights


def positive_pixels(keypoints: torch.Tensor, valid: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, K, H, W) bool: the pixel ``floor(kp + 0.5)`` of each valid instance (the cornernet positives)."""
    batch, _, num_keypoints = valid.shape
    mu = torch.floor(torch.where(valid.unsqueeze(-1), keypoints, torch.zeros_like(keypoints)) + 0.5)
    cols = torch.arange(width, device=keypoints.device, dtype=mu.dtype)
    rows = torch.arange(height, device=keypoints.device, dtype=mu.dtype)
    hit = (cols == mu[..., 0:1]).unsqueeze(-2) & (rows == mu[..., 1:2]).unsqueeze(-1)  # (B, N, K, H, W)
    hit = hit & valid.unsqueeze(-1).unsqueeze(-1)
    if hit.shape[1] == 0:
        return torch.zeros((batch, num_keypoints, height, width), dtype=torch.bool, device=keypoints.device)
    return hit.any(dim=1)


def _mse(x, prob, target, positive, alpha, gamma, beta):
    return (x - target) ** 2


def _focal(x, prob, target, positive, alpha, gamma, beta):
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return alpha_t * (target - prob).abs().pow(gamma) * F.binary_cross_entropy_with_logits(x, target, reduction="none")


def _cornernet(x, prob, target, positive, alpha, gamma, beta):
    # -log p = softplus(-x), -log(1 - p) = softplus(x): finite for any finite logit.
    positive_term = (1 - prob).pow(alpha) * F.softplus(-x)
    negative_term = (1 - target).pow(beta) * prob.pow(alpha) * F.softplus(x)
    return torch.where(positive, positive_term, negative_term)


# The per-pixel loss of each kind of kpfast.vocabulary.LOSS_KINDS (tests/ops/test_vocabulary.py
# checks that the keys are exactly those): (logits or values x, p = sigmoid(x) for the logit
# kinds else x, target t, positive pixels, alpha, gamma, beta) -> loss, before the L1 term and the
# pixel weights.
PIXEL_LOSSES = {"mse": _mse, "focal": _focal, "cornernet": _cornernet}


def heatmap_loss_maps(pred: torch.Tensor, keypoints: torch.Tensor, weights: torch.Tensor | None,
                      sigma: torch.Tensor | None, sigma_value: float, encoding: str, kind: str, alpha: float,
                      gamma: float, beta: float, keypoint_weight: float, background_weight: float, threshold: float,
                      l1_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-map weighted loss sums ``(B, K)`` float32 and cornernet positive counts ``(B, K)`` float32.

    pred (B, K, H, W) any float dtype (math in float32); keypoints (B, N, K, 2), weights (B, N, K) or
    None (every weight 1), sigma a (B, K) tensor (any strides) or None with ``sigma_value`` for every
    map: the kernels' argument convention (kpfast.ops._checks.keypoint_arguments / sigma_argument).
    Differentiable w.r.t. ``pred`` only.
    """
    height, width = pred.shape[-2:]
    keypoints = keypoints.detach().float()
    batch, num_keypoints = keypoints.shape[0], keypoints.shape[2]
    weights = materialise_weights(None if weights is None else weights.detach().float(), keypoints)
    sigma = materialise_sigma(None if sigma is None else sigma.detach().float(), sigma_value, batch, num_keypoints,
                              torch.float32, keypoints.device)
    maps, valid = gaussian_maps(keypoints, weights, sigma, height, width, encoding)
    batch, _, num_keypoints = valid.shape
    if maps.shape[1] > 0:
        target = maps.amax(dim=1)
        map_weight = torch.where(valid, weights, torch.zeros_like(weights)).amax(dim=1)
    else:
        target = pred.new_zeros((batch, num_keypoints, height, width), dtype=torch.float32)
        map_weight = weights.new_zeros((batch, num_keypoints))
    positive = positive_pixels(keypoints, valid, height, width)
    x = pred.float()
    pixel_weight = torch.where(target > threshold, keypoint_weight, background_weight) * map_weight[..., None, None]
    traits = vocabulary.loss_kind(kind)
    prob = torch.sigmoid(x) if traits.takes_logits else x
    loss = PIXEL_LOSSES[kind](x, prob, target, positive, alpha, gamma, beta)
    if l1_weight != 0:
        loss = loss + l1_weight * (prob - target).abs()
    weighted = torch.where(pixel_weight > 0, pixel_weight * loss, torch.zeros_like(loss))
    return weighted.sum(dim=(2, 3)), positive.sum(dim=(2, 3)).float()


def reduce_map_losses(map_losses: torch.Tensor, positives: torch.Tensor, kind: str, reduction: str,
                      pixels_per_map: int) -> torch.Tensor:
    """The requested reduction of per-map loss sums (shared by every backend).

    * a kind without the ``counts_positives`` trait (kpfast/vocabulary.py): ``mean`` = total /
      (B*K*H*W), ``sum`` = total, ``none`` = per-map sum / (H*W) (so ``none.mean() == mean``).
    * a kind with it (cornernet's CenterNet normalisation): ``mean`` and ``sum`` = total over the
      batch / the total number of positives (the negative term alone, i.e. divided by 1, when there
      are none); ``none`` = each map's sum / its own number of positives (at least 1).
    An empty batch gives 0 for ``mean`` and ``sum``.
    """
    if vocabulary.loss_kind(kind).counts_positives:
        if reduction == "none":
            return map_losses / positives.clamp(min=1.0)
        return map_losses.sum() / positives.sum().clamp(min=1.0)
    if reduction == "none":
        return map_losses / max(pixels_per_map, 1)
    if reduction == "sum":
        return map_losses.sum()
    return map_losses.sum() / max(map_losses.numel() * pixels_per_map, 1)


def heatmap_loss(pred, keypoints, weights, sigma, encoding, kind, alpha, gamma, beta, keypoint_weight,
                 background_weight, threshold, l1_weight, reduction) -> torch.Tensor:
    """The whole reference loss: render, elementwise formula, reduction (eager baseline).

    keypoints (B, N, K, 2), weights (B, N, K), sigma (B, K) tensors (the materialised arguments)."""
    map_losses, positives = heatmap_loss_maps(pred, keypoints, weights, sigma, 1.0, encoding, kind, alpha, gamma,
                                              beta, keypoint_weight, background_weight, threshold, l1_weight)
    return reduce_map_losses(map_losses, positives, kind, reduction, pred.shape[-2] * pred.shape[-1])
