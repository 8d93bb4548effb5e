"""uint8 across the worker boundary, normalisation on the device (kpfast/data/normalize.py): the
network sees the numbers the float32 loader gave it, and the normalisation is defined once."""

import cv2
import numpy as np
import pytest
import torch

from kpfast.data import CocoKeypointDataset, collate_samples
from kpfast.data import normalize, transforms
from kpfast.data.normalize import normalize_images, prepare_images


def _float32_loader_input(rgb_hwc: np.ndarray) -> np.ndarray:
    """What the loader's samples were before uint8 crossed the worker boundary: ``(3, H, W)``
    float32, ``rgb * (1 / (255 std)) - mean / std`` in float32 numpy, per channel plane."""
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    scale = (1.0 / (255.0 * std)).astype(np.float32)
    offset = (mean / std).astype(np.float32)
    out = np.empty((3,) + rgb_hwc.shape[:2], dtype=np.float32)
    for c in range(3):
        np.multiply(rgb_hwc[:, :, c], scale[c], out=out[c], dtype=np.float32)
        out[c] -= offset[c]
    return out


def test_device_normalised_uint8_samples_are_the_float32_path_inputs(synthetic_root):
    ds = CocoKeypointDataset(synthetic_root, "train", input_size=(128, 96))
    samples = [ds[i] for i in range(8)]
    batch = collate_samples(samples)
    assert batch["image"].dtype == torch.uint8 and batch["image"].shape == (8, 3, 128, 96)
    got = prepare_images(batch["image"], "cpu")
    expected = np.stack([_float32_loader_input(s["image"].permute(1, 2, 0).numpy()) for s in samples])
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)
    channels_last = prepare_images(batch["image"], "cpu", channels_last=True)
    assert channels_last.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(channels_last, got)


def test_predictor_crops_are_uint8_and_feed_the_float32_path_inputs():
    from kpfast.inference import Predictor

    class Codec:
        input_wh = (48, 64)

        def crop_matrix(self, center, scale):
            return np.array([[0.5, 0.0, 10.0], [0.0, 0.5, 5.0]])

        def image_to_heatmap_matrix(self, center, scale):
            return np.eye(3)[:2]

    bgr = np.random.default_rng(0).integers(0, 256, (100, 90, 3), dtype=np.uint8)
    crops, _ = Predictor(torch.nn.Identity(), Codec()).crop(bgr, [[5.0, 5.0, 40.0, 60.0]])
    assert crops.dtype == torch.uint8 and crops.shape == (1, 3, 64, 48)
    rgb = cv2.cvtColor(cv2.warpAffine(bgr, Codec().crop_matrix(None, None), (48, 64), flags=cv2.INTER_LINEAR),
                       cv2.COLOR_BGR2RGB)
    np.testing.assert_allclose(prepare_images(crops, "cpu")[0].numpy(), _float32_loader_input(rgb), rtol=0, atol=1e-6)


def test_one_definition():
    # The numpy constants and the CPU helper are the torch module's.
    assert np.array_equal(transforms.IMAGENET_MEAN, np.float32(normalize.IMAGENET_MEAN))
    assert np.array_equal(transforms.IMAGENET_STD, np.float32(normalize.IMAGENET_STD))
    rgb = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    assert np.array_equal(transforms.normalize_image(rgb), normalize_images(transforms.to_chw(rgb)).numpy())
    np.testing.assert_array_equal(transforms.denormalize_image(transforms.normalize_image(rgb)), rgb)


def test_floats_pass_as_normalised_and_other_dtypes_are_refused():
    crops = torch.randn(2, 3, 8, 6)
    assert prepare_images(crops, "cpu") is crops or torch.equal(prepare_images(crops, "cpu"), crops)
    warped = torch.full((3, 2, 2), 100.0)  # a float [0, 255] batch (the cuda path's warp) stays as it was
    assert normalize_images(warped).lt(0).all() and warped.eq(100.0).all()
    with pytest.raises(ValueError, match=r"^image: expected uint8 RGB crops or normalised floating-point crops, "
                                         r"got torch.int64$"):
        prepare_images(torch.zeros(1, 3, 4, 4, dtype=torch.int64), "cpu")
    with pytest.raises(ValueError, match=r"^images: expected \(\.\.\., 3, H, W\) RGB, got shape \(1, 4, 4, 3\)$"):
        normalize_images(torch.zeros(1, 4, 4, 3, dtype=torch.uint8))


def test_every_pixel_value_normalises_to_the_float32_path_bit_for_bit():
    # Not only within 1e-6: the same float32 multiply and subtract, so training sees the same numbers.
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256).contiguous()
    expected = _float32_loader_input(values.permute(1, 2, 0).numpy())
    assert np.array_equal(normalize_images(values).numpy(), expected)
