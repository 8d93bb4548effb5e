"""Augmentations keep keypoints on the image content: bright markers drawn at the keypoints are
found again, after augmentation, where the transformed keypoints say they are."""

import json

import cv2
import numpy as np
import pytest

from kpfast import geometry
from kpfast.data import CocoKeypointDataset, DEFAULT_AUGMENTATION, resolve_augmentation_config
from kpfast.data.augment import CropAugmenter
from kpfast.data.transforms import denormalize_image

# Needs the data/eval extras (absent on the GPU machine): skip, do not fail, without them.
pytest.importorskip("albumentations")
pytest.importorskip("pycocotools")

H, W = 128, 96
POINTS = np.array([[30.0, 30.0], [66.0, 34.0], [48.0, 64.0], [28.5, 98.0], [67.0, 96.5]], dtype=np.float32)
FLIP_INDEX = np.array([0, 2, 1, 4, 3])


def _marker_image(points=POINTS, h=H, w=W):
    img = np.full((h, w, 3), 40, np.uint8)
    for x, y in points:  # anti-aliased discs centred at the sub-pixel keypoint
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 2 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    return img


def _find_markers(image):
    gray = image.astype(np.float32).mean(-1)
    bg = float(np.median(gray))
    mask = (gray > (gray.max() + bg) / 2).astype(np.uint8)
    n, labels = cv2.connectedComponents(mask)
    weight = np.clip(gray - bg, 0, None)
    centres = []
    for label in range(1, n):
        ys, xs = np.nonzero(labels == label)
        wts = weight[ys, xs]
        centres.append([(xs * wts).sum() / wts.sum(), (ys * wts).sum() / wts.sum()])
    return np.array(centres).reshape(-1, 2)


def _check_on_markers(image, keypoints, tol, allow_missing=False):
    found = _find_markers(image)
    assert len(found), "no marker found"
    matched = 0
    for x, y in keypoints:
        if not (4 <= x <= image.shape[1] - 5 and 4 <= y <= image.shape[0] - 5):
            continue
        d = np.hypot(found[:, 0] - x, found[:, 1] - y).min()
        if allow_missing and d > 8:
            continue  # the marker was dropped out (CoarseDropout)
        assert d < tol, f"keypoint ({x:.2f}, {y:.2f}) is {d:.2f} px from the nearest marker"
        matched += 1
    assert matched >= (1 if allow_missing else 3)


ENTRIES = {e["type"]: e for e in DEFAULT_AUGMENTATION["albumentations"]}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_albumentations_transform_keeps_keypoints_on_markers(name):
    entry = dict(ENTRIES[name], p=1.0)
    if name == "Perspective":
        entry["scale"] = [0.08, 0.12]  # strong enough to move every marker visibly
    augmenter = CropAugmenter([entry], FLIP_INDEX)
    moved = 0.0
    for seed in range(4):
        image, kps, swaps = augmenter(_marker_image(), POINTS.copy(), np.random.default_rng(seed))
        assert image.shape == (H, W, 3) and image.dtype == np.uint8 and kps.shape == POINTS.shape
        # ElasticTransform: albumentations maps keypoints through the field approximately.
        tol = 2.0 if name == "ElasticTransform" else 0.75
        _check_on_markers(image, kps, tol, allow_missing=name == "CoarseDropout")
        if name == "HorizontalFlip":
            assert swaps == 1
            np.testing.assert_allclose(kps[:, 0], W - 1 - POINTS[FLIP_INDEX, 0], atol=1e-4)
            np.testing.assert_allclose(kps[:, 1], POINTS[FLIP_INDEX, 1], atol=1e-4)
        else:
            assert swaps == 0
        moved = max(moved, float(np.abs(kps - POINTS).max()))
    if name in ("Perspective", "ElasticTransform", "HorizontalFlip"):
        assert moved > 1.0, f"{name} did not move the keypoints; the test would prove nothing"
    else:
        assert moved == 0.0, f"pixel-level {name} must not move keypoints"


# ---- the whole pipeline (affine jitter, flip swap, a geometric albumentation) on a custom category

COLOURS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255]])  # RGB
NAMES = ["head", "left_hand", "right_hand", "left_foot", "right_foot"]


@pytest.fixture(scope="module")
def marker_dataset(tmp_path_factory):
    """A 1-image COCO dataset with a 5-keypoint category; each keypoint is a disc of its own colour."""
    root = tmp_path_factory.mktemp("markers")
    (root / "images" / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    img = np.zeros((240, 320, 3), np.uint8)
    pts = np.array([[150.3, 60.0], [190.0, 100.7], [112.2, 104.0], [175.5, 190.0], [131.0, 187.25]])
    for (x, y), c in zip(pts, COLOURS):
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 4 * 16, tuple(int(v) for v in c[::-1]), -1,
                   cv2.LINE_AA, shift=4)
    cv2.imwrite(str(root / "images/train2017/000000000001.png"), img)  # lossless
    kps = []
    for x, y in pts:
        kps += [float(x), float(y), 2]
    data = {"images": [{"id": 1, "file_name": "000000000001.png", "width": 320, "height": 240}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 5, "iscrowd": 0, "keypoints": kps,
                             "num_keypoints": 5, "bbox": [100.0, 50.0, 100.0, 150.0], "area": 15000.0}],
            "categories": [{"id": 5, "name": "toy", "keypoints": NAMES,
                            "skeleton": [[1, 2], [1, 3], [1, 4], [1, 5]]}]}
    (root / "annotations/person_keypoints_train2017.json").write_text(json.dumps(data))
    return root


def _colour_centre(rgb, colour):
    c = rgb.astype(np.int32)
    on = (c[..., 0] > 128) == (colour[0] > 0)
    on &= (c[..., 1] > 128) == (colour[1] > 0)
    on &= (c[..., 2] > 128) == (colour[2] > 0)
    on &= c.max(-1) > 128
    ys, xs = np.nonzero(on)
    return None if xs.size < 5 else np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("convention", ["standard", "udp"])
def test_full_pipeline_keypoints_follow_content_and_flip_swaps_identity(marker_dataset, convention):
    aug = {"flip": {"p": 0.5}, "half_body": {"p": 0.0}, "scale": {"p": 1.0, "range": [0.7, 1.4]},
           "rotation": {"p": 1.0, "max_degrees": 60}, "shift": {"p": 1.0, "factor": 0.1},
           "albumentations": [{"type": "Perspective", "p": 0.5, "scale": [0.02, 0.05]}]}
    ds = CocoKeypointDataset(marker_dataset, "train", input_size=(128, 96), convention=convention,
                             augmentation=aug)
    assert ds.info.num_keypoints == 5 and list(ds.info.flip_index) == [0, 2, 1, 4, 3]
    seen_flip = seen_plain = 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        s = ds[0]
        rgb = denormalize_image(s["image"].numpy())
        crop = geometry.heatmap_to_crop(s["keypoints"].numpy(), (96, 128), (24, 32), convention)
        flipped = s["meta"]["flipped"]
        seen_flip += flipped
        seen_plain += not flipped
        for k in range(5):
            x, y = crop[k]
            if s["weights"][k] == 0 or not (6 <= x <= 89 and 6 <= y <= 121):
                continue
            # Slot k holds keypoint flip_index[k] of the original when the sample is flipped.
            source = ds.info.flip_index[k] if flipped else k
            centre = _colour_centre(rgb, COLOURS[source])
            assert centre is not None, f"marker of {NAMES[source]} not found"
            assert np.hypot(*(centre - crop[k])) < 1.0, (epoch, k, centre, crop[k])
    assert seen_flip and seen_plain


def test_default_half_body_crops_around_a_body_half(coco_sample):
    aug = {"half_body": {"p": 1.0}, "flip": {"p": 0}, "scale": {"p": 0}, "rotation": {"p": 0},
           "shift": {"p": 0}, "albumentations": []}
    ds = CocoKeypointDataset(coco_sample, "val", augmentation=aug)
    plain = CocoKeypointDataset(coco_sample, "val", augmentation="none")
    smaller = sum(ds[i]["meta"]["scale"][1] < plain[i]["meta"]["scale"][1] - 1 for i in range(len(ds)))
    assert smaller >= 6  # instances with > 8 labelled keypoints get a half-body box


def test_augmentation_config_is_checked():
    cfg = resolve_augmentation_config({"rotation": {"p": 0.2}})
    assert cfg["rotation"] == {"p": 0.2, "max_degrees": 40.0}
    assert cfg["albumentations"] == DEFAULT_AUGMENTATION["albumentations"]
    with pytest.raises(ValueError, match="unknown augmentation section"):
        resolve_augmentation_config({"rotate": {"p": 0.2}})
    with pytest.raises(ValueError, match=r"rotation\.p must be a probability"):
        resolve_augmentation_config({"rotation": {"p": 2}})
    with pytest.raises(ValueError, match="unknown key"):
        resolve_augmentation_config({"scale": {"factor": 0.3}})
    with pytest.raises(ValueError, match="unknown albumentations transform 'Blurr'"):
        CropAugmenter([{"type": "Blurr", "p": 1.0}], FLIP_INDEX)
    with pytest.raises(ValueError, match="bad parameters for albumentations RandomGamma"):
        CropAugmenter([{"type": "RandomGamma", "p": 1.0, "gamma_limt": [80, 120]}], FLIP_INDEX)


def test_show_augmentations_writes_a_grid(coco_sample, tmp_path):
    from kpfast.data import show_augmentations

    out = show_augmentations.main(["--out", str(tmp_path / "grid.png"), "--data", str(coco_sample),
                                   "--split", "val", "--n", "4", "--input-size", "128", "96"])
    grid = cv2.imread(str(out))
    assert grid is not None and grid.shape == (2 * 130 + 2, 2 * 98 + 2, 3)
    # Keypoint dots (orange/blue/green, white rim) are drawn on the tiles.
    rgb = grid[..., ::-1].astype(int)
    orange = (rgb[..., 0] > 200) & (rgb[..., 1] > 100) & (rgb[..., 1] < 180) & (rgb[..., 2] < 60)
    assert orange.sum() > 20
    with pytest.raises(SystemExit):
        show_augmentations.main(["--out", str(tmp_path / "x.png"), "--n", "0"])
