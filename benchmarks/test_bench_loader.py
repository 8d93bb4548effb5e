"""Data loader throughput per worker (one process, one core), default augmentation, 256x192.

Compares kpfast's pipeline (images + keypoints; targets are rendered later by the fused ops)
with the same pipeline also rendering 17 Gaussian heatmaps per sample on the CPU with numpy,
as other toolkits do in their loaders (MMPose 1.x ``generate_udp_gaussian_heatmaps``: one
full-map ``exp`` per keypoint). Datasets: the embedded synthetic one and the real
coco_sample when present. Figures go to ``benchmark.extra_info``:

* ``samples_per_s``: samples / wall-clock second (median round);
* ``samples_per_cpu_s``: samples / CPU second of the process, i.e. per core, which stays
  meaningful when other jobs share the machine.

Run: ``python -m pytest benchmarks/test_bench_loader.py --benchmark-columns=median``
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

# The loader needs the data extras; a GPU machine without them skips this module, not the run.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

from kpfast.data import CocoKeypointDataset  # noqa: E402

INPUT_SIZE = (256, 192)  # (H, W)
HEATMAP_SIZE = (64, 48)
SAMPLES_PER_ROUND = 96
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


def _coco_sample_root() -> Path | None:
    env = os.environ.get("KPFAST_COCO_SAMPLE")
    repo = Path(__file__).resolve().parents[1]
    candidates = [Path(env)] if env else [repo.parent / "shared/data/coco_sample",
                                          repo.parent.parent / "shared/data/coco_sample"]
    for c in candidates:
        if (c / "annotations/person_keypoints_val2017.json").is_file():
            return c
    return None


@pytest.fixture(scope="module", params=["synthetic", "coco_sample"])
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
    else:
        root, split = _coco_sample_root(), "val"
        if root is None:
            pytest.skip("coco_sample not found")
    ds = CocoKeypointDataset(root, split, input_size=INPUT_SIZE, heatmap_size=HEATMAP_SIZE,
                             train=True, augmentation="default")
    ds.name = request.param
    return ds


@pytest.mark.parametrize("targets", ["keypoints", "keypoints+numpy_heatmaps"])
def test_loader_throughput_per_worker(benchmark, dataset, targets):
    state = {"index": 0, "cpu": [], "wall": []}
    render = targets != "keypoints"

    def load_round():
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(SAMPLES_PER_ROUND):
            sample = dataset[state["index"] % len(dataset)]
            state["index"] += 1
            if render:
                heatmaps, _ = render_udp_heatmaps_numpy(sample["keypoints"].numpy(), sample["weights"].numpy())
                sample["heatmaps"] = torch.from_numpy(heatmaps)
        state["cpu"].append(time.process_time() - cpu0)
        state["wall"].append(time.perf_counter() - wall0)

    load_round()  # warm-up: file cache, lazy imports
    state["cpu"].clear()
    state["wall"].clear()
    benchmark.pedantic(load_round, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    per_s = SAMPLES_PER_ROUND / float(np.median(state["wall"]))
    per_cpu_s = SAMPLES_PER_ROUND / float(np.median(state["cpu"]))
    benchmark.extra_info.update(op="data_loader", dataset=dataset.name, targets=targets,
                                input_size=list(INPUT_SIZE), augmentation="default",
                                samples_per_round=SAMPLES_PER_ROUND,
                                samples_per_s=round(per_s, 1), samples_per_cpu_s=round(per_cpu_s, 1))
    print(f"\n{dataset.name:12s} {targets:26s} {per_s:7.1f} samples/s wall, {per_cpu_s:7.1f} samples/CPU-s")
    assert per_s > 0  # the figure is reported, never asserted against a threshold here
