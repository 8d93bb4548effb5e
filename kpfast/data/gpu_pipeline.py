"""The device half of the ``data.decode_device: cuda`` loader (docs/design.md §Performance).

With ``decode_device="cuda"`` the dataset's workers only read each JPEG's bytes (header-checked,
never decoded) and sample the crop: a training sample carries ``encoded`` (the file's bytes,
uint8) and ``crop_matrix`` (image -> network input, float64) instead of ``image``; its
keypoints, weights and meta are exactly the CPU path's. :func:`materialize_batch` then decodes
the batch (nvJPEG through ``torchvision.io.decode_jpeg`` on a GPU; OpenCV on the CPU, which is
how the tests run this very code) and warps each image with ``grid_sample`` into the CPU path's
uint8 crop, on the device, so only bytes cross the worker boundary and the host-to-device copy;
the consumer normalises it there like any crop (kpfast/data/normalize.py).

The warp reproduces ``cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT 0)``: pixel ``j`` at ``x = j``
on both sides, so with ``align_corners=True`` normalised ``-1``/``+1`` are the centres of the
first/last pixels; the output pixel ``(x, y)`` samples the image at ``crop_matrix^-1 (x, y)``
bilinearly, zeros outside. OpenCV rounds its coordinates to 1/32 pixel and its weights to 15 bits,
hence the small tolerance in tests/data/test_gpu_pipeline.py.

Photometric augmentation: each sample carries a seed from its own random stream
(``photometric_seed``); :func:`materialize_batch` draws the whole batch's parameters at once from
a generator seeded by the batch's seeds (:func:`batch_generator`; drawing them per sample in the
worker cost ~0.4 ms of torch overhead per sample, more than the rest of the worker's work) and
applies them to the uint8 crops on the device (:mod:`kpfast.data.gpu_photometric`), as the CPU
path runs albumentations on its uint8 crop after the warp. A batch's draws are a pure function of
its samples, so a resumed run repeats them.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

# This module imports with torch alone, as kpfast.data.normalize does: benchmarks/gpu_loader_check.py
# runs both on a GPU machine without the trainer's packages.

__all__ = ["GPU_DECODE_EXTRA", "decode_jpegs", "warp_images", "materialize_batch"]

GPU_DECODE_EXTRA = "gpu-decode"


def _torchvision_decode_jpeg():
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        raise ImportError(f"data.decode_device: cuda needs torchvision (nvJPEG): pip install "
                          f"'kpfast[{GPU_DECODE_EXTRA}]'") from None
    return decode_jpeg, ImageReadMode.RGB


def decode_jpegs(encoded: Sequence[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """``(3, H, W)`` uint8 RGB images on ``device`` from JPEG bytes (1-D uint8 CPU tensors), in
    the file's stored frame (no EXIF rotation, as :func:`kpfast.data.transforms.read_image_checked`)."""
    device = torch.device(device)
    if device.type == "cuda":
        decode_jpeg, rgb = _torchvision_decode_jpeg()
        return list(decode_jpeg(list(encoded), mode=rgb, device=device))
    import cv2  # the CPU decode (tests, CPU training) uses the CPU path's decoder

    out = []
    for data in encoded:
        bgr = cv2.imdecode(data.numpy(), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise ValueError("encoded: OpenCV cannot decode one of the batch's JPEGs")
        out.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1).to(device))
    return out


def _to_normalised(size: int) -> torch.Tensor:
    """Pixel coordinate -> align_corners=True normalised coordinate, as a 3x3 block of one axis."""
    return torch.tensor([2.0 / max(size - 1, 1), -1.0], dtype=torch.float64)


def warp_images(images: Sequence[torch.Tensor], crop_matrix: torch.Tensor, out_hw: tuple[int, int]
                ) -> torch.Tensor:
    """``(B, 3, H, W)`` float32 in [0, 255]: each ``(3, h, w)`` image warped by its image -> crop
    matrix (``(B, 2, 3)``) as ``cv2.warpAffine`` does (bilinear, black borders)."""
    out_h, out_w = (int(v) for v in out_hw)
    if crop_matrix.shape != (len(images), 2, 3):
        raise ValueError(f"crop_matrix must be ({len(images)}, 2, 3), got {tuple(crop_matrix.shape)}")
    full = torch.zeros((len(images), 3, 3), dtype=torch.float64)
    full[:, :2] = crop_matrix.to(torch.float64).cpu()
    full[:, 2, 2] = 1.0
    inverse = torch.linalg.inv(full)  # crop pixel -> image pixel
    # theta = N_image @ inverse @ N_crop^-1, with N the pixel -> normalised map of each side.
    ox, oy = _to_normalised(out_w), _to_normalised(out_h)
    n_out_inv = torch.tensor([[1 / ox[0], 0, 1 / ox[0]], [0, 1 / oy[0], 1 / oy[0]], [0, 0, 1]],
                             dtype=torch.float64)
    warped = []
    for image, inv in zip(images, inverse):
        h, w = image.shape[-2:]
        ix, iy = _to_normalised(w), _to_normalised(h)
        n_in = torch.tensor([[ix[0], 0, ix[1]], [0, iy[0], iy[1]], [0, 0, 1]], dtype=torch.float64)
        theta = (n_in @ inv @ n_out_inv)[:2].to(torch.float32).to(image.device)
        grid = F.affine_grid(theta[None], [1, 3, out_h, out_w], align_corners=True)
        warped.append(F.grid_sample(image[None].to(torch.float32), grid, mode="bilinear",
                                    padding_mode="zeros", align_corners=True)[0])
    return torch.stack(warped)


def materialize_batch(batch: dict[str, Any], device: torch.device, out_hw: tuple[int, int] | None = None,
                      photometric=None) -> dict[str, Any]:
    """A collated batch of encoded samples with its ``image`` made on ``device``: decode, warp,
    round to uint8 ``(B, 3, H, W)`` RGB (what the CPU path's crop is; normalised by the consumer,
    :func:`kpfast.data.normalize.prepare_images`), then the batch's photometric draws applied by
    ``photometric`` (the dataset's :class:`kpfast.data.gpu_photometric.PhotometricAugmenter`).
    Batches that already have ``image`` are returned as they are."""
    if "image" in batch:
        return batch
    seeds = batch.get("photometric_seed")
    if seeds is not None and photometric is None:
        raise ValueError("photometric: the batch carries photometric seeds; expected the dataset's "
                         "PhotometricAugmenter, got None")
    matrices = batch["crop_matrix"]
    if out_hw is None:
        out_hw = tuple(int(v) for v in batch["input_size"][0])
    images = decode_jpegs(batch["encoded"], device)
    crops = warp_images(images, matrices, out_hw).round_().clamp_(0, 255).to(torch.uint8)
    if seeds is not None:
        draws = photometric.sample(crops.shape[0], out_hw[0], out_hw[1], batch_generator(seeds))
        crops = photometric.apply(crops, draws)
    out = {k: v for k, v in batch.items() if k not in ("encoded", "crop_matrix", "input_size", "photometric_seed")}
    out["image"] = crops
    return out


def batch_generator(seeds: torch.Tensor) -> torch.Generator:
    """A CPU generator seeded by a batch's per-sample seeds, in order (a 64-bit linear congruential
    mix: the same samples in the same order give the same generator, in any process)."""
    mixed = 0
    for seed in seeds.tolist():
        mixed = (mixed * 6364136223846793005 + int(seed) + 1442695040888963407) % 2**64
    return torch.Generator().manual_seed(mixed % 2**63)
