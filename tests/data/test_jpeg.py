"""Reduced JPEG decoding (kpfast.data.jpeg): the pixel-centre map of OpenCV's reduced decode,
the factor choice, and crops that match the full-resolution path (docs/design.md §Performance)."""

import cv2
import numpy as np
import pytest

from kpfast import geometry
from kpfast.data.jpeg import decode_flags, reduced_matrix, reduction_for_scale
from kpfast.data.transforms import read_image_reduced, warp_crop


def _blob_jpeg(cx, cy, h=480, w=640, sigma=6.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2)) * 230 + 10
    ok, buf = cv2.imencode(".jpg", np.repeat(img[..., None], 3, 2).astype(np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    return buf


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("centre", [(100.3, 200.7), (333.5, 123.25), (500.0, 400.0)])
def test_reduced_pixel_j_sits_at_factor_j_plus_half_factor_minus_one(factor, centre):
    # A sub-pixel blob's centroid in the reduced decode, mapped back with the documented rule,
    # lands on the true centre; the naive rule x = factor * j misses by (factor - 1) / 2.
    small = cv2.imdecode(_blob_jpeg(*centre), decode_flags(factor)).astype(np.float64)[..., 0]
    assert small.shape == (480 // factor, 640 // factor)
    mass = np.clip(small - 10, 0, None)
    ys, xs = np.mgrid[0:small.shape[0], 0:small.shape[1]]
    cx, cy = (mass * xs).sum() / mass.sum(), (mass * ys).sum() / mass.sum()
    # reduced_matrix(identity) is the reduced -> full-resolution pixel map itself.
    full = reduced_matrix(np.eye(3)[:2], factor) @ np.array([cx, cy, 1.0])
    assert np.allclose(full, centre, atol=0.06)
    assert not np.allclose(factor * np.array([cx, cy]), centre, atol=0.3)


def test_reduction_for_scale_keeps_margin_pixels_per_output_pixel():
    out = (192, 256)
    assert reduction_for_scale((191.0, 255.0), out) == 1
    assert reduction_for_scale((384.0, 512.0), out) == 2
    assert reduction_for_scale((383.9, 512.0), out) == 1     # the smaller axis decides
    assert reduction_for_scale((800.0, 1100.0), out) == 4
    assert reduction_for_scale((1600.0, 2100.0), out) == 8
    assert reduction_for_scale((1600.0, 2100.0), out, margin=2.0) == 4
    with pytest.raises(ValueError, match="margin must be > 0"):
        reduction_for_scale((1.0, 1.0), out, margin=0.0)
    with pytest.raises(ValueError, match="reduction factor must be one of"):
        decode_flags(3)


def _textured_photo(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for cells, amp in ((4, 60.0), (16, 40.0), (48, 20.0)):
        small = rng.normal(0, 1, (cells * h // w + 1, cells + 1, 3)).astype(np.float32)
        img += amp * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(img + 128, 0, 255).astype(np.uint8)


# Resampling tolerance of a crop from the 1/factor decode against the full decode, in grey
# levels (0-255): mean absolute difference, and the 99th percentile (measured: mean 0.34 at 1/2,
# 0.55 at 1/4, p99 1-2; the wrong pixel-centre rule gives 0.7-1.95). The full path samples a
# downscaled crop bilinearly (aliasing); the reduced one has been block-averaged first, so the
# two differ by the high frequencies the crop cannot represent anyway.
MEAN_TOLERANCE = 1.0
P99_TOLERANCE = 4.0


@pytest.mark.parametrize("factor", [2, 4])
@pytest.mark.parametrize("rotation", [0.0, 33.0])
def test_crop_from_reduced_decode_matches_full_decode(tmp_path, factor, rotation):
    h, w = 1200, 1600
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), _textured_photo(h, w), [cv2.IMWRITE_JPEG_QUALITY, 95])
    out_wh = (192, 256)
    scale = np.array([192.0, 256.0]) * factor * 1.05
    assert reduction_for_scale(scale, out_wh) == factor
    matrix = geometry.crop_matrix(np.array([800.0, 610.0]), scale, rotation, out_wh, "udp")
    full, reason, f1 = read_image_reduced(path, (w, h), reduction=1)
    small, reason, f2 = read_image_reduced(path, (w, h), reduction=factor)
    assert (f1, f2, reason) == (1, factor, "")
    assert small.shape[:2] == (h // factor, w // factor)
    ref = warp_crop(full, matrix, out_wh).astype(np.float64)
    got = warp_crop(small, reduced_matrix(matrix, factor), out_wh).astype(np.float64)
    # The wrong pixel-centre rule (no (factor - 1) / 2 shift) is visibly worse.
    naive = reduced_matrix(matrix, factor).copy()
    naive[:, 2] = matrix[:, 2]
    wrong = warp_crop(small, naive, out_wh).astype(np.float64)
    diff = np.abs(got - ref)
    print(f"factor {factor} rotation {rotation}: mean {diff.mean():.2f}, p99 {np.percentile(diff, 99):.1f}, "
          f"naive rule mean {np.abs(wrong - ref).mean():.2f}")
    assert diff.mean() < MEAN_TOLERANCE, diff.mean()
    assert np.percentile(diff, 99) < P99_TOLERANCE
    assert np.abs(wrong - ref).mean() > diff.mean() * 1.3


def test_png_is_never_reduced(tmp_path):
    path = tmp_path / "photo.png"
    cv2.imwrite(str(path), _textured_photo(64, 80))
    image, reason, factor = read_image_reduced(path, (80, 64), reduction=4)
    assert (image.shape, reason, factor) == ((64, 80, 3), "", 1)


@pytest.fixture(scope="module")
def big_photo_coco(tmp_path_factory):
    """One 1600x1200 JPEG with five people of 150-1100 px: crops needing factors 1, 2 and 4."""
    import json

    root = tmp_path_factory.mktemp("big_coco")
    (root / "images/val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    cv2.imwrite(str(root / "images/val2017/1.jpg"), _textured_photo(1200, 1600, seed=3),
                [cv2.IMWRITE_JPEG_QUALITY, 90])
    rng = np.random.default_rng(0)
    anns = []
    for i, (x, y, bw, bh) in enumerate([(100, 50, 500, 1100), (700, 100, 400, 900), (1200, 300, 250, 600),
                                        (300, 500, 150, 300), (900, 800, 80, 150)]):
        kps = np.concatenate([rng.uniform([x, y], [x + bw, y + bh], (17, 2)), np.full((17, 1), 2.0)], 1)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [x, y, bw, bh],
                     "area": bw * bh, "iscrowd": 0, "num_keypoints": 17,
                     "keypoints": kps.reshape(-1).tolist()})
    from kpfast.data.info import COCO_KEYPOINT_NAMES

    (root / "annotations/person_keypoints_val2017.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 1600, "height": 1200}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": []}]}))
    return root


def test_dataset_reduced_decode_keeps_targets_and_augmentation_identical(big_photo_coco):
    # Same seeds -> identical crop parameters, keypoints, weights and meta as the full-decode
    # path and as the reference order (box sampled after decoding, _make_sample(plan=None));
    # only the crop's pixels differ, within the resampling tolerance above.
    from kpfast.data import CocoKeypointDataset
    from kpfast.data.coco import _ALBUMENTATIONS_STREAM
    from kpfast.data.transforms import denormalize_image, read_image_checked

    kw = dict(input_size=(256, 192), train=True, augmentation="default", seed=7)
    fast = CocoKeypointDataset(big_photo_coco, "val", **kw)
    full = CocoKeypointDataset(big_photo_coco, "val", decode_reduction_margin=None, **kw)
    image, _ = read_image_checked(big_photo_coco / "images/val2017/1.jpg")
    factors, diffs = [], []
    for epoch in range(6):
        fast.set_epoch(epoch)
        full.set_epoch(epoch)
        for i in range(len(fast)):
            a, b = fast[i], full[i]
            ref = full._make_sample(full.instances[i], image, full._rng(i, 0), i,
                                    albumentations_rng=full._rng(i, 0, _ALBUMENTATIONS_STREAM))
            for other in (b, ref):
                assert torch_equal(a["keypoints"], other["keypoints"])
                assert torch_equal(a["weights"], other["weights"])
                for key, value in a["meta"].items():
                    assert np.array_equal(np.asarray(value), np.asarray(other["meta"][key])), key
            assert torch_equal(b["image"], ref["image"])
            factors.append(reduction_for_scale(a["meta"]["scale"], (192, 256)))
            diffs.append(np.abs(denormalize_image(a["image"].numpy()).astype(float)
                                - denormalize_image(b["image"].numpy())).mean())
    assert {1, 2, 4} <= set(factors)  # the reduced paths were exercised
    assert max(diffs) < 2 * MEAN_TOLERANCE  # albumentations (blur, HSV) may amplify a little


def torch_equal(a, b) -> bool:
    return bool((a == b).all()) and a.shape == b.shape


def test_decode_reduction_margin_is_checked(big_photo_coco):
    from kpfast.data import CocoKeypointDataset

    with pytest.raises(ValueError, match="decode_reduction_margin must be > 0 or None, got 0"):
        CocoKeypointDataset(big_photo_coco, "val", decode_reduction_margin=0)
