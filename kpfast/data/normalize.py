"""The network input's normalisation, defined once (docs/data.md, "Images").

Samples cross the DataLoader's worker boundary, the pinned-memory collate and the host-to-device
copy as uint8 ``(3, H, W)`` RGB crops: a quarter of float32's bytes, and no per-sample float
pass on a loader core. Whoever feeds a model (the train step, :class:`kpfast.inference.Predictor`)
hands its crops to :func:`prepare_images`, which moves them to the device and normalises them
there with ImageNet's mean and std, ``(x / 255 - mean) / std`` as ``x * scale - offset``.
Floating-point crops are taken as already normalised (callers that build their own inputs).

Torch only: kpfast.data.gpu_pipeline, which runs on GPU machines without the trainer's packages,
imports it.
"""

from __future__ import annotations

import functools

import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_images", "prepare_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@functools.lru_cache(maxsize=16)
def _scale_offset(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 ``1 / (255 std)`` and ``mean / std`` as ``(3, 1, 1)`` on ``device``, computed in
    float32 as the numpy path did, so the normalised values are the same numbers."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
    scale = 1.0 / (255.0 * std)
    offset = mean / std
    return scale.view(3, 1, 1).to(device), offset.view(3, 1, 1).to(device)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """``(..., 3, H, W)`` RGB in [0, 255] (uint8, or floating point such as a warp's output) ->
    float32 normalised with ImageNet's mean and std, on the images' device."""
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"images: expected (..., 3, H, W) RGB, got shape {tuple(images.shape)}")
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"images: expected uint8 or floating-point pixels in [0, 255], got {images.dtype}")
    scale, offset = _scale_offset(images.device)
    # One float32 allocation, then in place: on a CPU device a batch's fresh temporaries cost
    # more in page faults than the arithmetic (benchmarks/profile_loader.py). copy=True: a float32
    # input is never modified.
    return images.to(torch.float32, copy=True).mul_(scale).sub_(offset)


def prepare_images(images: torch.Tensor, device: torch.device | str, channels_last: bool = False) -> torch.Tensor:
    """The model's input on ``device``: uint8 crops are copied as uint8 (asynchronously from
    pinned memory) and normalised there; floating-point crops are taken as already normalised.
    ``channels_last``: in that memory format (as the model was trained with ``model.channels_last``)."""
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise ValueError(f"image: expected uint8 RGB crops or normalised floating-point crops, got {images.dtype}")
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize_images(images)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images
