"""Per-stage cost of one training sample of kpfast's loader, one core (docs/design.md §Performance).

Stages, timed separately over every instance of a dataset (several passes, wall-clock with one
thread, which on an idle core equals CPU time): file read, JPEG decode (full and at the reduced
factor the sample allows), box/scale/rotation sampling, warp, colour conversion, albumentations,
the uint8 CHW copy a sample carries, collate (per sample, of a batch of 32) and the batch's
normalisation (the consumer's, on its device: here the CPU). Prints a table in microseconds per sample.

``decode_1_8`` is not a stage of the pipeline: a decode at 1/8 scale still entropy-decodes every
block of the file but leaves out nearly all the IDCT, upsampling and colour work, so it bounds what
decoding only a crop's region could save (a region decode also entropy-decodes everything above
the region: libjpeg-turbo's partial decoding skips IDCT work, not the Huffman stream).

    python benchmarks/profile_loader.py [--dataset coco_like|coco_sample|both] [--passes N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from coco_like import coco_sample_root, ensure_coco_like  # noqa: E402

from kpfast import geometry  # noqa: E402
from kpfast.data import CocoKeypointDataset  # noqa: E402
from kpfast.data.jpeg import decode_flags, reduction_for_scale, reduced_matrix  # noqa: E402
from kpfast.data.loader import collate_samples  # noqa: E402
from kpfast.data.normalize import normalize_images  # noqa: E402
from kpfast.data.transforms import _read_regular_file, to_chw, warp_crop  # noqa: E402

INPUT_SIZE = (256, 192)


def profile(ds: CocoKeypointDataset, passes: int) -> dict[str, float]:
    """Mean microseconds per sample of each stage."""
    in_h, in_w = ds.input_size
    t = defaultdict(float)
    n = 0
    samples = []
    clock = time.thread_time  # CPU time of this thread: robust to other jobs on the machine
    for p in range(passes):
        for i in range(len(ds)):
            inst = ds.instances[i]
            rng = np.random.default_rng([0, p, i])
            t0 = clock()
            data, _ = _read_regular_file(inst.image_path)
            t1 = clock()
            full = cv2.imdecode(data, decode_flags(1))
            t2 = clock()
            cv2.imdecode(data, decode_flags(8))
            t["decode_1_8"] += clock() - t2
            t2 = clock()
            box, matrix = ds._plan_crop(inst, rng)
            factor = reduction_for_scale(box.scale, (in_w, in_h))
            t3 = clock()
            small = cv2.imdecode(data, decode_flags(factor)) if factor > 1 else full
            t4 = clock()
            crop = warp_crop(small, reduced_matrix(matrix, factor), (in_w, in_h))
            t5 = clock()
            rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
            t6 = clock()
            kps = geometry.transform_points(inst.keypoints[:, :2], matrix).astype(np.float32)
            rgb, kps, _ = ds.crop_augmenter(rgb, kps, rng)
            t7 = clock()
            image = to_chw(rgb)  # uint8 across the worker boundary
            t8 = clock()
            samples.append({"image": image, "keypoints": torch.from_numpy(kps),
                            "weights": torch.ones(len(kps)), "meta": {"index": i}})
            if len(samples) == 32:
                t9 = clock()
                batch = collate_samples(samples)
                t10 = clock()
                normalize_images(batch["image"])  # the consumer's, on its device (here the CPU)
                t["collate"] += t10 - t9
                t["normalise_batch"] += clock() - t10
                samples.clear()
            for name, a, b in (("read", t0, t1), ("decode_full", t1, t2), ("sample_box", t2, t3),
                               ("decode_reduced", t3, t4), ("warp", t4, t5), ("bgr2rgb", t5, t6),
                               ("albumentations", t6, t7), ("to_chw_uint8", t7, t8)):
                t[name] += b - a
            t["factor_sum"] += factor
            n += 1
    order = ["read", "decode_full", "decode_1_8", "sample_box", "decode_reduced", "warp", "bgr2rgb",
             "albumentations", "to_chw_uint8", "collate", "normalise_batch"]
    out = {k: t[k] / n * 1e6 for k in order}
    out["mean_factor"] = t["factor_sum"] / n
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="both", choices=["coco_like", "coco_sample", "both"])
    parser.add_argument("--passes", type=int, default=10)
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    roots = {}
    if args.dataset in ("coco_like", "both"):
        roots["coco_like"] = ensure_coco_like()
    if args.dataset in ("coco_sample", "both"):
        root = coco_sample_root()
        if root is None:
            print("coco_sample not found: skipped")
        else:
            roots["coco_sample"] = root
    for name, root in roots.items():
        ds = CocoKeypointDataset(root, "val", input_size=INPUT_SIZE, train=True, augmentation="default")
        stats = profile(ds, args.passes)
        print(f"\n{name}: {len(ds)} instances x {args.passes} passes, microseconds per sample "
              f"(mean reduction factor {stats.pop('mean_factor'):.2f})")
        for key, us in stats.items():
            print(f"  {key:15s} {us:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
