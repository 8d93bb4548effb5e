"""The device half of the ``data.decode_device: cuda`` loader on a GPU (docs/design.md §Performance).

Runs with torch alone (the GPU machine has no pycocotools/albumentations): random COCO-sized
images and crop matrices with the default augmentation's scale/rotation/flip ranges; the warp and
normalisation on the GPU must equal the same code on CPU tensors (which the CPU tests check
against cv2.warpAffine) within ``--tolerance`` grey levels, and the default photometric
augmentation (kpfast.data.gpu_photometric, checked against albumentations on the CPU) its CPU
result within 1; then batches of ``--batch`` are timed on the GPU, each part with the host CPU
time it costs this process per sample (``*_host_cpu_us_per_*``). The nvJPEG decode runs when
torchvision is installed and matches the CPU decode within 2 grey levels (decoders' IDCTs may
differ by rounding), and then the whole device half (``materialize_batch`` on a batch of JPEG bytes,
then ``prepare_images``) is timed too; without torchvision the decode is reported ``skipped:
torchvision missing`` and the rest still runs on images made in memory (gpu_suite.sh installs
wheels carried in ``.gpu-wheels/``, see benchmarks/README.md).

    python benchmarks/gpu_loader_check.py [--out FILE.json] [--batch 64] [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import torch

from kpfast import geometry
from kpfast.data.augment import DEFAULT_AUGMENTATION
from kpfast.data.gpu_photometric import PhotometricAugmenter
from kpfast.data.gpu_pipeline import materialize_batch, warp_images
from kpfast.data.normalize import normalize_images, prepare_images


def _matrices(batch: int, rng: np.random.Generator, out_wh=(192, 256)) -> torch.Tensor:
    mats = []
    for _ in range(batch):
        h = rng.uniform(60, 470)
        scale = np.array([h * 0.75, h]) * 1.25 * rng.uniform(0.75, 1.25)
        rotation = rng.uniform(-40, 40) if rng.random() < 0.6 else 0.0
        m = geometry.crop_matrix(rng.uniform([100, 100], [540, 380]), scale, rotation, out_wh, "udp")
        if rng.random() < 0.5:
            m = geometry.compose_affine(geometry.flip_matrix(out_wh[0]), m)
        mats.append(m)
    return torch.from_numpy(np.stack(mats))


def _photo_like(batch: int, rng: np.random.Generator) -> list[torch.Tensor]:
    """640x480 RGB images whose quality-90 JPEGs weigh ~140 KB, COCO's ~158 KB order (smooth
    structure plus grain): the decode's cost follows the compressed size, and uniform noise
    would compress to 4x that."""
    base = torch.from_numpy(rng.uniform(0, 255, (batch, 3, 60, 80)).astype(np.float32))
    image = torch.nn.functional.interpolate(base, size=(480, 640), mode="bicubic", align_corners=False)
    image += torch.from_numpy(rng.normal(0, 8, image.shape).astype(np.float32))
    return list(image.round_().clamp_(0, 255).to(torch.uint8))


def _timed(fn, rounds: int, batch: int, warmup: int = 3) -> tuple[float, float]:
    """``(samples per second, host CPU microseconds per sample)`` of ``rounds`` calls of ``fn``
    on a batch, after ``warmup`` untimed calls: wall time to the last kernel's end, and this process's CPU time (all threads:
    launches, nvJPEG's host-side work) over the same span, which is what the device half adds to
    the workers' CPU cost per sample (benchmarks/README.md, "The data loader")."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        fn()
    torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return round(rounds * batch / wall, 1), round(cpu / (rounds * batch) * 1e6, 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=1.0)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("skipped: no GPU (torch.cuda.is_available() is False)")
        return 0
    cuda = torch.device("cuda")
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.integers(0, 256, (3, 480, 640), dtype=np.uint8)) for _ in range(args.batch)]
    mats = _matrices(args.batch, rng)
    report: dict = {"batch": args.batch, "input_size": [256, 192], "device": torch.cuda.get_device_name()}
    cpu = normalize_images(warp_images(images, mats, (256, 192)).round())
    gpu = normalize_images(warp_images([i.to(cuda) for i in images], mats, (256, 192)).round()).cpu()
    grey = ((gpu - cpu).abs() * 255 * 0.229).max().item()  # in grey levels (smallest std)
    report["warp_max_grey_diff_vs_cpu"] = round(grey, 3)
    ok = grey <= args.tolerance
    batch_bytes = None
    try:
        from torchvision.io import decode_jpeg, encode_jpeg
    except ImportError:
        report["decode"] = "skipped: torchvision missing"
    else:
        encoded = [encode_jpeg(i, quality=90) for i in images[:8]]
        on_gpu = decode_jpeg(encoded, device=cuda)
        on_cpu = decode_jpeg(encoded)
        diff = max((a.cpu().int() - b.int()).abs().max().item() for a, b in zip(on_gpu, on_cpu))
        report["decode"] = f"nvJPEG vs CPU decode max diff {diff} grey levels"
        ok = ok and diff <= 2
        batch_bytes = [encode_jpeg(i, quality=90) for i in _photo_like(args.batch, rng)]
        report["jpeg_mean_kb"] = round(sum(b.numel() for b in batch_bytes) / len(batch_bytes) / 1e3, 1)
        report["decode_images_per_s"], report["decode_host_cpu_us_per_image"] = _timed(
            lambda: decode_jpeg(batch_bytes, device=cuda), args.rounds, args.batch)
    on_device = [i.to(cuda) for i in images]
    report["warp_normalise_samples_per_s"], report["warp_normalise_host_cpu_us_per_sample"] = _timed(
        lambda: normalize_images(warp_images(on_device, mats, (256, 192)).round()), args.rounds, args.batch)
    # The default photometric augmentation (kpfast/data/gpu_photometric.py): every transform forced
    # on, GPU against the same draws on CPU tensors (1 grey level: float32 sums in another order),
    # then the default probabilities timed.
    entries = DEFAULT_AUGMENTATION["albumentations"]
    forced = PhotometricAugmenter.from_config([dict(e, p=1.0) for e in entries if e["p"] > 0])
    crops = warp_images(images, mats, (256, 192)).round_().clamp_(0, 255).to(torch.uint8)
    draws = forced.sample(args.batch, 256, 192, torch.Generator().manual_seed(0))
    on_cpu = forced.apply(crops, draws)
    on_gpu = forced.apply(crops.to(cuda), draws).cpu()
    photometric_diff = (on_gpu.int() - on_cpu.int()).abs().max().item()
    report["photometric_max_grey_diff_vs_cpu"] = photometric_diff
    ok = ok and photometric_diff <= 1
    augmenter = PhotometricAugmenter.from_config(entries)
    generator = torch.Generator().manual_seed(1)
    crops = crops.to(cuda)
    report["photometric_default_samples_per_s"], report["photometric_default_host_cpu_us_per_sample"] = _timed(
        lambda: augmenter(crops, generator), args.rounds, args.batch)
    if batch_bytes is not None:
        # The whole device half as training runs it: a collated batch of JPEG bytes, crop matrices
        # and photometric seeds -> decoded, warped, augmented, normalised model input.
        batch = {"encoded": batch_bytes, "crop_matrix": mats, "input_size": torch.tensor([[256, 192]] * args.batch),
                 "photometric_seed": torch.arange(args.batch, dtype=torch.int64)}
        step = lambda: prepare_images(materialize_batch(dict(batch), cuda, photometric=augmenter)["image"], cuda)
        report["device_half_samples_per_s"], report["device_half_host_cpu_us_per_sample"] = _timed(
            step, args.rounds, args.batch)
    report["ok"] = bool(ok and math.isfinite(grey))
    print(json.dumps(report, indent=1))
    if report["decode"].startswith("skipped"):
        print(report["decode"])
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=1)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
