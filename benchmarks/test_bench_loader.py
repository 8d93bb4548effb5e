"""Data loader throughput per worker (one process, one core), default augmentation, 256x192.

Compares, in one run and on the same instances:

* ``full_decode``: kpfast's default pipeline (images + keypoints; targets are rendered later by
  the fused ops);
* ``reduced_decode``: the same with ``data.decode_reduction_margin: 1.0`` (opt-in), JPEGs decoded
  at 1/2-1/8 when the crop allows (:mod:`kpfast.data.jpeg`);
* either one also rendering 17 Gaussian heatmaps per sample on the CPU with numpy, as other
  toolkits do in their loaders (MMPose 1.x ``generate_udp_gaussian_heatmaps``: one full-map
  ``exp`` per keypoint);
* ``encoded_bytes``: the worker half of ``data.decode_device: cuda`` with the default augmentation
  (file bytes, header checks, box-level augmentation, keypoints, the photometric parameters);
  decode, warp, photometric augmentation and normalisation happen on the GPU, not counted here
  (``benchmarks/gpu_loader_check.py`` times them on a GPU);
* ``mmpose_style``: a minimal MMPose-style loader (full ``cv2.imread``, random scale/rotation/
  flip, ``warpAffine``, flip, normalise, numpy heatmaps; no photometric augmentation).

Every pipeline's samples are collated in batches of 32 inside the timed round, as a DataLoader
worker does (kpfast's ``collate_samples``; a plain ``torch.stack`` per key for the MMPose-style one):
kpfast's samples carry uint8 crops, normalised later on the training device (not counted), the
MMPose-style ones float32 crops normalised in the worker.

Datasets: the embedded synthetic one, the real coco_sample when present, and ``coco_like``:
48 generated 640x480 quality-90 JPEGs (~140 KB, COCO's average is ~158 KB) with people of
COCO-like sizes (benchmarks/coco_like.py; written to the temp dir, never committed).
Figures go to ``benchmark.extra_info``:

* ``samples_per_s``: samples / wall-clock second (median round);
* ``samples_per_cpu_s``: samples / CPU second of the process, i.e. per core, which stays
  meaningful when other jobs share the machine.

Run: ``python -m pytest benchmarks/test_bench_loader.py --benchmark-columns=median``
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch

# The loader needs the data extras; a GPU machine without them skips this module, not the run.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

from kpfast.data import CocoKeypointDataset, collate_samples  # noqa: E402

INPUT_SIZE = (256, 192)  # (H, W)
HEATMAP_SIZE = (64, 48)
SAMPLES_PER_ROUND = 96
BATCH = 32  # SAMPLES_PER_ROUND is a multiple
ROUNDS = 5


def render_udp_heatmaps_numpy(keypoints: np.ndarray, weights: np.ndarray, size=HEATMAP_SIZE,
                              sigma: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample CPU target rendering the way loader-side toolkits do it (UDP Gaussian).

    For each keypoint: skip it when its 3-sigma window is off the map, else evaluate the
    Gaussian centred at the exact sub-pixel location over the whole map.
    """
    h, w = size
    k = keypoints.shape[0]
    heatmaps = np.zeros((k, h, w), dtype=np.float32)
    out_weights = weights.astype(np.float32).copy()
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None]
    radius = 3 * sigma
    for j in range(k):
        if out_weights[j] < 0.5:
            continue
        mu_x, mu_y = keypoints[j]
        if mu_x + radius < 0 or mu_y + radius < 0 or mu_x - radius >= w or mu_y - radius >= h:
            out_weights[j] = 0.0
            continue
        heatmaps[j] = np.exp(-((xs - mu_x) ** 2 + (ys - mu_y) ** 2) / (2 * sigma ** 2))
    return heatmaps, out_weights


@pytest.fixture(scope="module", params=["synthetic", "coco_sample", "coco_like"])
def dataset(request):
    # One worker == one core, for this module only: the thread counts are restored afterwards,
    # so later benchmarks in the same run are measured (and labelled) with all threads.
    threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    try:
        yield _make_dataset(request)
    finally:
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)


def _make_dataset(request):
    if request.param == "synthetic":
        from kpfast.data.synthetic import ensure_synthetic_dataset

        root, split = ensure_synthetic_dataset(num_train=300, num_val=20), "train"
    elif request.param == "coco_like":
        from coco_like import ensure_coco_like

        root, split = ensure_coco_like(), "val"
    else:
        from coco_like import coco_sample_root

        root, split = coco_sample_root(), "val"
        if root is None:
            pytest.skip("coco_sample not found")
    datasets = {}
    for pipeline, margin in (("reduced_decode", 1.0), ("full_decode", None)):
        ds = CocoKeypointDataset(root, split, input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE,
                                 train=True, augmentation="default", decode_reduction_margin=margin)
        ds.name = request.param
        datasets[pipeline] = ds
    # The worker half of data.decode_device: cuda: header-checked bytes, the sampled crop and the
    # default photometric augmentation's parameters (applied on the device, not counted here).
    ds = CocoKeypointDataset(root, split, input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE, train=True,
                             augmentation="default", decode_device="cuda")
    ds.name = request.param
    datasets["encoded_bytes"] = ds
    return datasets


_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def mmpose_style_sample(dataset: CocoKeypointDataset, index: int, rng: np.random.Generator):
    """A minimal MMPose-style top-down sample: full decode, box jitter as MMPose's defaults
    (scale 0.75-1.25, rotation +-40 with p 0.6, flip 0.5), one warpAffine, flip, normalise,
    numpy heatmaps. No photometric augmentation: the cheapest loader of that design."""
    from kpfast import geometry

    inst = dataset.instances[index]
    image = cv2.imread(str(inst.image_path), cv2.IMREAD_COLOR)
    in_h, in_w = INPUT_SIZE
    center, scale = geometry.bbox_xywh_to_center_scale(inst.bbox, in_w / in_h, 1.25)
    scale = scale * rng.uniform(0.75, 1.25)
    rotation = rng.uniform(-40, 40) if rng.random() < 0.6 else 0.0
    matrix = geometry.crop_matrix(center, scale, rotation, (in_w, in_h), "udp")
    crop = cv2.warpAffine(image, matrix, (in_w, in_h), flags=cv2.INTER_LINEAR)
    keypoints = geometry.transform_points(inst.keypoints[:, :2], matrix)
    if rng.random() < 0.5:
        crop = cv2.flip(crop, 1)
        keypoints = np.stack([in_w - 1 - keypoints[:, 0], keypoints[:, 1]], 1)[dataset.info.flip_index]
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255.0)
    chw = ((rgb - _MEAN) / _STD).transpose(2, 0, 1)
    heatmaps, weights = render_udp_heatmaps_numpy((keypoints * 0.25).astype(np.float32),
                                                  (inst.keypoints[:, 2] > 0).astype(np.float32))
    return {"image": torch.from_numpy(np.ascontiguousarray(chw)), "heatmaps": torch.from_numpy(heatmaps),
            "weights": torch.from_numpy(weights)}


@pytest.mark.parametrize("pipeline,targets", [
    ("reduced_decode", "keypoints"), ("full_decode", "keypoints"),
    ("reduced_decode", "keypoints+numpy_heatmaps"), ("full_decode", "keypoints+numpy_heatmaps"),
    ("mmpose_style", "numpy_heatmaps"), ("encoded_bytes", "keypoints")])
def test_loader_throughput_per_worker(benchmark, dataset, pipeline, targets):
    state = {"index": 0, "cpu": [], "wall": []}
    render = targets == "keypoints+numpy_heatmaps"
    rng = np.random.default_rng(0)
    dataset = dataset["full_decode" if pipeline == "mmpose_style" else pipeline]

    def load_round():
        cpu0, wall0 = time.process_time(), time.perf_counter()
        batch = []
        for _ in range(SAMPLES_PER_ROUND):
            if pipeline == "mmpose_style":
                batch.append(mmpose_style_sample(dataset, state["index"] % len(dataset), rng))
                state["index"] += 1
            else:
                sample = dataset[state["index"] % len(dataset)]
                state["index"] += 1
                if render:
                    heatmaps, _ = render_udp_heatmaps_numpy(sample["keypoints"].numpy(), sample["weights"].numpy())
                    sample["heatmaps"] = torch.from_numpy(heatmaps)
                batch.append(sample)
            if len(batch) == BATCH:
                if pipeline == "mmpose_style":
                    {key: torch.stack([s[key] for s in batch]) for key in batch[0]}
                else:
                    collate_samples(batch)
                    if render:
                        torch.stack([s["heatmaps"] for s in batch])
                batch = []
        state["cpu"].append(time.process_time() - cpu0)
        state["wall"].append(time.perf_counter() - wall0)

    load_round()  # warm-up: file cache, lazy imports
    state["cpu"].clear()
    state["wall"].clear()
    benchmark.pedantic(load_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    per_s = SAMPLES_PER_ROUND / float(np.median(state["wall"]))
    per_cpu_s = SAMPLES_PER_ROUND / float(np.median(state["cpu"]))
    benchmark.extra_info.update(op="data_loader", dataset=dataset.name, pipeline=pipeline, targets=targets,
                                input_size=list(INPUT_SIZE), augmentation="default",
                                samples_per_round=SAMPLES_PER_ROUND,
                                samples_per_s=round(per_s, 1), samples_per_cpu_s=round(per_cpu_s, 1))
    print(f"\n{dataset.name:12s} {pipeline:15s} {targets:26s} {per_s:7.1f} samples/s wall, "
          f"{per_cpu_s:7.1f} samples/CPU-s")
    assert per_s > 0  # the figure is reported, never asserted against a threshold here
