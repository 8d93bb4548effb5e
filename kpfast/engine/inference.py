"""Running a trained model on crops: flip test, decoding, mapping back to image space."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["logit_activation", "merge_flip", "predict_heatmaps", "decode", "autocast_context"]


def logit_activation(loss_kind: str) -> str | None:
    """Heatmaps trained with a logit loss (focal, cornernet) go through a sigmoid before decoding."""
    return "sigmoid" if loss_kind in ("focal", "cornernet") else None


def merge_flip(heatmaps: torch.Tensor, flipped_heatmaps: torch.Tensor, flip_pairs, shift: bool = False) -> torch.Tensor:
    """Average of the plain and the flipped-back prediction (the standard flip test, ``kpfast.ops.flip_merge``)."""
    from kpfast.ops import flip_merge

    return flip_merge(heatmaps, flipped_heatmaps, [(int(a), int(b)) for a, b in flip_pairs], shift=shift)


def autocast_context(device: torch.device, precision: str):
    if precision == "fp32":
        return torch.autocast(device_type=device.type, enabled=False)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # CPU autocast supports bf16 only in practice
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def predict_heatmaps(
    model: torch.nn.Module,
    images: torch.Tensor,
    flip_test: bool,
    flip_pairs,
    shift: bool = False,
    precision: str = "fp32",
    activation: str | None = None,
) -> torch.Tensor:
    """Float32 heatmaps for a batch of crops, optionally averaged with the flipped prediction.

    ``activation="sigmoid"`` turns logit heatmaps (focal / cornernet losses) into
    probabilities before averaging, so that scores are in [0, 1].
    """
    with autocast_context(images.device, precision):
        heatmaps = model(images)["heatmaps"].float()
        if activation == "sigmoid":
            heatmaps = heatmaps.sigmoid()
        if flip_test:
            flipped = model(images.flip(-1))["heatmaps"].float()
            if activation == "sigmoid":
                flipped = flipped.sigmoid()
            heatmaps = merge_flip(heatmaps, flipped, flip_pairs, shift)
    return heatmaps


def decode(heatmaps: torch.Tensor, method: str, blur_kernel: int, backend: str = "auto"):
    """``kpfast.ops.decode_heatmaps`` -> numpy (B, K, 2) coords in heatmap px and (B, K) scores."""
    from kpfast.ops import decode_heatmaps

    coords, scores = decode_heatmaps(heatmaps, method=method, blur_kernel=blur_kernel, backend=backend)
    return coords.float().cpu().numpy().astype(np.float64), scores.float().cpu().numpy().astype(np.float64)
