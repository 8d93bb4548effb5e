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


def test_cuda_decoding_refuses_what_the_device_cannot_augment(synthetic_root, tmp_path):
    # The default albumentations entries run on the device; one without a batched version is
    # refused in one line rather than skipped.
    assert CocoKeypointDataset(synthetic_root, "train", decode_device="cuda").photometric.names == [
        "HueSaturationValue", "RandomGamma", "GaussianBlur", "MotionBlur", "CoarseDropout"]
    with pytest.raises(ValueError, match=r"^augmentation: decode_device='cuda' augments crops on the device: "
                                         r"albumentations entry 0 \(type 'CLAHE', p=0.5\)"):
        CocoKeypointDataset(synthetic_root, "train", decode_device="cuda",
                            augmentation={"albumentations": [{"type": "CLAHE", "p": 0.5}]})
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
    # The reduced JPEG decode: off unless data.decode_reduction_margin sets it, and then for
    # training samples only.
    assert create_dataset(config.data, "train", train=True).decode_reduction_margin is None
    config.data.decode_reduction_margin = 1.0
    assert create_dataset(config.data, "train", train=True).decode_reduction_margin == 1.0
    assert create_dataset(config.data, "val", train=False).decode_reduction_margin is None
    with pytest.raises(Exception, match=r"^data\.decode_reduction_margin: "):
        config_from_dict({"data": {"decode_reduction_margin": 0}})
    with pytest.raises(Exception, match=r"^data\.decode_device: expected one of \['cpu', 'cuda'\], got 'gpu'"):
        config_from_dict({"data": {"decode_device": "gpu"}})
    enc = CocoKeypointDataset(synthetic_root, "train", augmentation=GEOMETRIC_ONLY, decode_device="cuda")
    batch = collate_samples([enc[0], enc[1]])
    moved = TrainStep.to_device(SimpleNamespace(device=torch.device("cpu"), channels_last=False, photometric=None),
                                batch)
    assert moved["image"].shape == (2, 3, 256, 192) and moved["image"].dtype == torch.float32
    assert torch.equal(moved["keypoints"], batch["keypoints"])
    assert torch.equal(moved["image"], normalize_images(materialize_batch(batch, torch.device("cpu"))["image"]))


def test_device_photometric_draws_from_the_samples_seeds(synthetic_root):
    # Each sample carries a seed from its own stream (so a resumed run repeats it); the device
    # draws the batch's photometric parameters from the batch's seeds and applies them to the
    # warped uint8 crops, as albumentations runs on the CPU path's uint8 crop after its warp.
    from kpfast.data.gpu_pipeline import batch_generator

    enc = CocoKeypointDataset(synthetic_root, "train", decode_device="cuda", seed=5)
    again = CocoKeypointDataset(synthetic_root, "train", decode_device="cuda", seed=5)
    other_epoch = CocoKeypointDataset(synthetic_root, "train", decode_device="cuda", seed=5)
    other_epoch.set_epoch(1)
    augmenter = enc.photometric
    samples = [enc[i] for i in range(12)]
    seeds = [int(s["photometric_seed"]) for s in samples]
    assert seeds == [int(again[i]["photometric_seed"]) for i in range(12)]
    assert len(set(seeds)) == 12 and seeds != [int(other_epoch[i]["photometric_seed"]) for i in range(12)]
    batch = collate_samples(samples)
    assert batch["photometric_seed"].shape == (12,)
    draws = augmenter.sample(12, 256, 192, batch_generator(batch["photometric_seed"]))
    assert sum(int(d.applied.sum()) for d in draws) > 0, "no sample drew a photometric transform: pick a seed that does"
    plain = materialize_batch({k: v for k, v in batch.items() if k != "photometric_seed"}, torch.device("cpu"))["image"]
    made = materialize_batch(batch, torch.device("cpu"), photometric=augmenter)
    assert "photometric_seed" not in made and made["image"].dtype == torch.uint8
    assert torch.equal(made["image"], augmenter.apply(plain, draws))
    assert not torch.equal(made["image"], plain)
    assert torch.equal(materialize_batch(batch, torch.device("cpu"), photometric=augmenter)["image"], made["image"])
    # Another order of the same samples is another batch: other draws.
    assert batch_generator(batch["photometric_seed"].flip(0)).initial_seed() != \
        batch_generator(batch["photometric_seed"]).initial_seed()
    with pytest.raises(ValueError, match=r"^photometric: the batch carries photometric seeds; expected the dataset's"):
        materialize_batch(batch, torch.device("cpu"))
    # The train step applies the training set's augmenter.
    from types import SimpleNamespace

    from kpfast.engine.loop import TrainStep

    step = SimpleNamespace(device=torch.device("cpu"), channels_last=False, photometric=augmenter)
    assert torch.equal(TrainStep.to_device(step, batch)["image"], normalize_images(made["image"]))
