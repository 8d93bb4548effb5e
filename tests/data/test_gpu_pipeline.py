"""The decode_device="cuda" loader run on CPU tensors (kpfast.data.gpu_pipeline): the device half
produces the CPU path's samples within a stated tolerance, and the worker half hands over the
CPU path's keypoints, weights and meta exactly (docs/design.md §Performance)."""

import cv2
import numpy as np
import pytest
import torch

from kpfast import geometry
from kpfast.data import CocoKeypointDataset
from kpfast.data.gpu_pipeline import decode_jpegs, materialize_batch, warp_images
from kpfast.data.loader import collate_samples
from kpfast.data.normalize import normalize_images
from kpfast.data.transforms import warp_crop

# cv2.warpAffine rounds source coordinates to 1/32 pixel and weights to 15 bits; grid_sample
# does neither: measured max 2 grey levels, mean < 0.1 on textured images.
MAX_GREY_DIFF = 3
MEAN_GREY_DIFF = 0.25


def _photo(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("rotation,flip", [(0.0, False), (25.0, True), (-170.0, False)])
def test_warp_matches_cv2_warp_affine(rotation, flip):
    rgb = _photo()
    out_wh = (48, 64)
    matrix = geometry.crop_matrix(np.array([70.3, 55.8]), np.array([90.0, 120.0]), rotation, out_wh, "udp")
    if flip:
        matrix = geometry.compose_affine(geometry.flip_matrix(out_wh[0]), matrix)
    ref = warp_crop(rgb, matrix, out_wh).astype(np.float64)  # crops partly outside: borders too
    got = warp_images([torch.from_numpy(rgb).permute(2, 0, 1)], torch.from_numpy(matrix)[None], out_wh[::-1])
    got = got[0].round().clamp(0, 255).permute(1, 2, 0).numpy()
    diff = np.abs(got - ref)
    assert diff.max() <= MAX_GREY_DIFF and diff.mean() < MEAN_GREY_DIFF, (diff.max(), diff.mean())
    # A half-pixel convention error (align_corners=False, or pixel corners at integers) is far off.
    shifted = matrix.copy()
    shifted[:, 2] += 0.5
    assert np.abs(got - warp_crop(rgb, shifted, out_wh)).mean() > 4 * MEAN_GREY_DIFF


def test_warp_checks_its_matrices():
    with pytest.raises(ValueError, match=r"crop_matrix must be \(1, 2, 3\), got \(2, 2, 3\)"):
        warp_images([torch.zeros(3, 4, 4, dtype=torch.uint8)], torch.zeros(2, 2, 3), (4, 4))


def test_decode_on_cpu_is_the_stored_frame_rgb(tmp_path):
    bgr = _photo()
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    (image,) = decode_jpegs([torch.from_numpy(buf.reshape(-1))], torch.device("cpu"))
    ref = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert image.dtype == torch.uint8 and torch.equal(image.permute(1, 2, 0), torch.from_numpy(ref))


def test_cuda_decode_without_torchvision_names_the_extra():
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"needs torchvision \(nvJPEG\): pip install 'kpfast\[gpu-decode\]'"):
            decode_jpegs([torch.zeros(4, dtype=torch.uint8)], torch.device("cuda"))
    else:
        pytest.skip("torchvision is installed")


GEOMETRIC_ONLY = {"albumentations": []}


def test_encoded_samples_become_the_cpu_samples(synthetic_root):
    kw = dict(input_size=(256, 192), train=True, augmentation=GEOMETRIC_ONLY, seed=3,
              decode_reduction_margin=None)
    cpu = CocoKeypointDataset(synthetic_root, "train", **kw)
    enc = CocoKeypointDataset(synthetic_root, "train", decode_device="cuda", **kw)
    indices = list(range(0, min(len(cpu), 64), 4))
    for epoch in (0, 1):
        cpu.set_epoch(epoch)
        enc.set_epoch(epoch)
        a = collate_samples([cpu[i] for i in indices])
        b_samples = [enc[i] for i in indices]
        assert all("image" not in s and s["encoded"].dtype == torch.uint8 for s in b_samples)
        b = materialize_batch(collate_samples(b_samples), torch.device("cpu"))
        assert set(a) == set(b)
        assert torch.equal(a["keypoints"], b["keypoints"]) and torch.equal(a["weights"], b["weights"])
        for key, value in a["meta"].items():
            assert np.array_equal(np.asarray(value), np.asarray(b["meta"][key])), key
        # Both uint8 RGB crops, normalised alike by their consumer (kpfast.data.normalize).
        assert b["image"].shape == a["image"].shape and a["image"].dtype == b["image"].dtype == torch.uint8
        diff = np.abs(b["image"].numpy().astype(np.float64) - a["image"].numpy())
        assert diff.max() <= MAX_GREY_DIFF and diff.mean() < MEAN_GREY_DIFF, (diff.max(), diff.mean())


def test_cuda_decoding_refuses_albumentations_and_png(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match=r"decode_device='cuda' runs no albumentations stage yet"):
        CocoKeypointDataset(synthetic_root, "train", decode_device="cuda")
    with pytest.raises(ValueError, match=r"decode_device must be 'cpu' or 'cuda', got 'gpu'"):
        CocoKeypointDataset(synthetic_root, "train", decode_device="gpu")


def test_config_key_reaches_the_training_dataset_and_the_step_makes_images(synthetic_root):
    # data.decode_device: cuda -> the training dataset hands over bytes (evaluation keeps the
    # CPU decode), and the train step turns an encoded batch into normalised images.
    from types import SimpleNamespace

    from kpfast.data.registry import create_dataset
    from kpfast.engine.config import config_from_dict
    from kpfast.engine.loop import TrainStep

    config = config_from_dict({"data": {"decode_device": "cuda", "root": str(synthetic_root),
                                        "dataset": "coco", "train_split": "train", "val_split": "val",
                                        "augmentation": GEOMETRIC_ONLY}})
    assert create_dataset(config.data, "train", train=True).decode_device == "cuda"
    assert create_dataset(config.data, "val", train=False).decode_device == "cpu"
    # The reduced JPEG decode: training samples only, unless dataset_options sets it for both.
    assert create_dataset(config.data, "train", train=True).decode_reduction_margin == 1.0
    assert create_dataset(config.data, "val", train=False).decode_reduction_margin is None
    config.data.dataset_options["decode_reduction_margin"] = 2.0
    assert create_dataset(config.data, "val", train=False).decode_reduction_margin == 2.0
    with pytest.raises(Exception, match=r"^data\.decode_device: expected one of \['cpu', 'cuda'\], got 'gpu'"):
        config_from_dict({"data": {"decode_device": "gpu"}})
    enc = CocoKeypointDataset(synthetic_root, "train", augmentation=GEOMETRIC_ONLY, decode_device="cuda")
    batch = collate_samples([enc[0], enc[1]])
    moved = TrainStep.to_device(SimpleNamespace(device=torch.device("cpu"), channels_last=False), batch)
    assert moved["image"].shape == (2, 3, 256, 192) and moved["image"].dtype == torch.float32
    assert torch.equal(moved["keypoints"], batch["keypoints"])
    assert torch.equal(moved["image"], normalize_images(materialize_batch(batch, torch.device("cpu"))["image"]))


def test_photometric_hook_sees_the_warped_float_batch(synthetic_root):
    # The place a batched photometric augmentation plugs in: after the warp, before the rounding.
    enc = CocoKeypointDataset(synthetic_root, "train", augmentation=GEOMETRIC_ONLY, decode_device="cuda")
    batch = collate_samples([enc[0], enc[1]])
    seen = []

    def darken(crops):
        seen.append((crops.dtype, tuple(crops.shape)))
        return crops * 0.5

    plain = materialize_batch(batch, torch.device("cpu"))["image"].float()
    dark = materialize_batch(batch, torch.device("cpu"), photometric=darken)["image"].float()
    assert seen == [(torch.float32, (2, 3, 256, 192))]
    assert (dark - plain * 0.5).abs().max() <= 1.0  # the plain crop was rounded before halving
