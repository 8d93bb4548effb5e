"""CocoKeypointDataset on the real coco_sample: instances, boxes, geometry, flip, batching."""

import json

import numpy as np
import pytest
import torch

from kpfast import geometry
from kpfast.data import (CocoKeypointDataset, DatasetInfo, build_dataloader, collate_samples)
from kpfast.data.normalize import normalize_images

# Needs the data/eval extras (absent on the GPU machine): skip, do not fail, without them.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

DETS = "detections/person_detections_val2017.json"
VALID_IDS = {442619, 198196, 230195, 460541, 488308, 1717641, 1724673, 437295, 467657, 531914,
             533949, 543117}  # the 12 non-crowd persons with num_keypoints > 0


def _ann_keypoints(root):
    data = json.loads((root / "annotations/person_keypoints_val2017.json").read_text())
    return {a["id"]: np.array(a["keypoints"], dtype=np.float64).reshape(17, 3) for a in data["annotations"]}


def test_yields_the_12_valid_instances_in_both_modes(coco_sample):
    for train in (True, False):
        ds = CocoKeypointDataset(coco_sample, "val", train=train)
        assert len(ds) == 12
        assert {inst.annotation_id for inst in ds.instances} == VALID_IDS
        assert ds.skipped_missing == 0
    assert ds.info.num_keypoints == 17 and ds.info.sigmas is not None


def test_sample_layout(coco_sample):
    ds = CocoKeypointDataset(coco_sample, "val", input_size=(128, 96), train=True)
    s = ds[3]
    assert s["image"].shape == (3, 128, 96) and s["image"].dtype == torch.uint8  # RGB, normalised on the device
    assert s["keypoints"].shape == (17, 2) and s["keypoints"].dtype == torch.float32
    assert s["weights"].shape == (17,) and set(s["weights"].unique().tolist()) <= {0.0, 1.0}
    meta = s["meta"]
    assert {"image_id", "center", "scale", "rotation", "score", "area", "bbox", "flipped"} <= set(meta)
    assert isinstance(meta["image_id"], int) and isinstance(meta["flipped"], bool)
    assert meta["center"].shape == (2,) and meta["scale"].shape == (2,) and meta["bbox"].shape == (4,)
    # ImageNet normalisation (the consumer's): values span roughly [-2.1, 2.6].
    image = normalize_images(s["image"])
    assert -2.2 < float(image.min()) and float(image.max()) < 2.7
    assert ds.heatmap_size == (32, 24)


@pytest.mark.parametrize("convention", ["standard", "udp"])
def test_eval_keypoints_are_the_annotations_in_heatmap_pixels(coco_sample, convention):
    """Without augmentation, heatmap keypoints map back to the annotated image points (1e-3 px)."""
    ds = CocoKeypointDataset(coco_sample, "val", train=False, convention=convention)
    anns = _ann_keypoints(coco_sample)
    for i in range(len(ds)):
        s = ds[i]
        ann = anns[ds.instances[i].annotation_id]
        m = s["meta"]
        assert m["rotation"] == 0.0 and not m["flipped"] and m["score"] == 1.0
        back = geometry.heatmap_to_image(s["keypoints"].numpy().astype(np.float64), m["center"].astype(np.float64),
                                         m["scale"].astype(np.float64), 0.0, (192, 256), (48, 64), convention)
        labelled = ann[:, 2] > 0
        assert np.abs(back[labelled] - ann[labelled, :2]).max() < 1e-3 * 10  # float32 storage
        expected_w = labelled.copy()
        crop = geometry.heatmap_to_crop(s["keypoints"].numpy(), (192, 256), (48, 64), convention)
        inside = (crop[:, 0] >= -1e-3) & (crop[:, 0] <= 191 + 1e-3) & (crop[:, 1] >= -1e-3) & (crop[:, 1] <= 255 + 1e-3)
        expected_w &= inside
        np.testing.assert_array_equal(s["weights"].numpy(), expected_w.astype(np.float32))
        # The meta affine is the same mapping.
        np.testing.assert_allclose(geometry.transform_points(ann[:, :2], m["affine"]), s["keypoints"].numpy(),
                                   atol=2e-3)


def test_detector_boxes_with_score_threshold(coco_sample):
    dets = json.loads((coco_sample / DETS).read_text())
    for thr in (0.0, 0.3, 0.9):
        ds = CocoKeypointDataset(coco_sample, "val", train=False, detections=coco_sample / DETS,
                                 det_score_threshold=thr)
        expected = [d for d in dets if d["score"] >= thr and d["bbox"][2] > 0 and d["bbox"][3] > 0]
        assert len(ds) == len(expected)
        assert sorted(i.score for i in ds.instances) == sorted(d["score"] for d in expected)
    s = ds[0]
    assert s["meta"]["score"] >= 0.9 and s["weights"].sum() == 0
    x, y, w, h = s["meta"]["bbox"]
    np.testing.assert_allclose(s["meta"]["center"], [x + w / 2, y + h / 2], rtol=1e-5)
    assert s["meta"]["area"] == pytest.approx(float(w * h), rel=1e-4)


@pytest.mark.parametrize("convention", ["standard", "udp"])
def test_flip_swaps_left_right_pairs_on_coordinates(coco_sample, convention):
    only_flip = {"flip": {"p": 1.0}, "half_body": {"p": 0}, "scale": {"p": 0}, "rotation": {"p": 0},
                 "shift": {"p": 0}, "albumentations": []}
    plain = CocoKeypointDataset(coco_sample, "val", train=False, convention=convention)
    flipped = CocoKeypointDataset(coco_sample, "val", train=True, augmentation=only_flip, convention=convention)
    flip_index = plain.info.flip_index
    assert flip_index[5] == 6 and flip_index[6] == 5 and flip_index[0] == 0  # shoulders swap, nose stays
    for i in range(len(plain)):
        a, b = plain[i], flipped[i]
        assert b["meta"]["flipped"] and not a["meta"]["flipped"]
        ca = geometry.heatmap_to_crop(a["keypoints"].numpy(), (192, 256), (48, 64), convention)
        cb = geometry.heatmap_to_crop(b["keypoints"].numpy(), (192, 256), (48, 64), convention)
        # Slot k of the flipped sample is the mirror image of slot flip_index[k] of the plain one.
        np.testing.assert_allclose(cb[:, 0], 191.0 - ca[flip_index, 0], atol=1e-3)
        np.testing.assert_allclose(cb[:, 1], ca[flip_index, 1], atol=1e-3)
        np.testing.assert_array_equal(b["weights"].numpy(), a["weights"].numpy()[flip_index])
        # The crop itself is mirrored.
        # (up to one grey level: warpAffine rounds its fixed-point interpolation)
        torch.testing.assert_close(b["image"], a["image"].flip(-1), atol=0.02, rtol=0)
        # And the meta round trip still lands on the image annotation.
        m = b["meta"]
        back = geometry.heatmap_to_image(b["keypoints"].numpy(), m["center"], m["scale"], 0.0,
                                         (192, 256), (48, 64), convention, flipped=True)
        ref = geometry.heatmap_to_image(a["keypoints"].numpy(), m["center"], m["scale"], 0.0,
                                        (192, 256), (48, 64), convention)
        w = b["weights"].numpy() > 0
        np.testing.assert_allclose(back[w], ref[flip_index][w], atol=1e-2)


def test_determinism_for_a_seed_and_epoch(coco_sample):
    a = CocoKeypointDataset(coco_sample, "val", train=True, seed=5)
    b = CocoKeypointDataset(coco_sample, "val", train=True, seed=5)
    for i in (0, 7):
        torch.testing.assert_close(a[i]["image"], b[i]["image"])
        torch.testing.assert_close(a[i]["keypoints"], b[i]["keypoints"])
    before = a[7]["keypoints"].clone()
    a.set_epoch(1)
    assert not torch.equal(a[7]["keypoints"], before)
    c = CocoKeypointDataset(coco_sample, "val", train=True, seed=6)
    assert not torch.equal(c[7]["keypoints"], before)


def test_collate_and_dataloader(coco_sample):
    ds = CocoKeypointDataset(coco_sample, "val", train=True, input_size=(64, 48))
    batch = collate_samples([ds[i] for i in range(5)])
    assert batch["image"].shape == (5, 3, 64, 48) and batch["keypoints"].shape == (5, 17, 2)
    assert batch["weights"].shape == (5, 17)
    m = batch["meta"]
    assert m["image_id"].dtype == torch.int64 and m["flipped"].dtype == torch.bool
    assert m["center"].shape == (5, 2) and m["bbox"].shape == (5, 4) and m["score"].dtype == torch.float32
    assert m["affine"].shape == (5, 2, 3)
    with pytest.raises(ValueError, match="empty"):
        collate_samples([])
    cfg = {"data": {"root": str(coco_sample), "train_split": "val", "input_size": [64, 48],
                    "batch_size": 4, "num_workers": 0}}
    loader = build_dataloader(cfg, "train")
    batches = list(loader)
    assert len(batches) == 3 and all(b["image"].shape == (4, 3, 64, 48) for b in batches)
    val = build_dataloader({"data": dict(cfg["data"], detections=str(coco_sample / DETS),
                                         det_score_threshold=0.5)}, "val")
    assert not val.dataset.train and val.dataset.detections_file is not None
    assert sum(b["image"].shape[0] for b in val) == len(val.dataset)
    with pytest.raises(ValueError, match="unknown data config"):
        build_dataloader({"data": {"root": str(coco_sample), "input_sise": [64, 48]}}, "train")


def test_dataset_info_from_category_and_overrides():
    info = DatasetInfo.coco()
    assert info.num_keypoints == 17 and len(info.flip_pairs) == 8 and len(info.skeleton) == 19
    assert info.skeleton[0] == (15, 13)  # 0-based from the 1-based file
    assert info.sigmas[0] == pytest.approx(0.026)
    assert info.lower_body_ids == (11, 12, 13, 14, 15, 16)
    cat = {"id": 3, "name": "hand", "keypoints": ["wrist", "l_thumb", "r_thumb", "tip"],
           "skeleton": [[1, 2], [1, 3], [1, 4]]}
    hand = DatasetInfo.from_category(cat, {"sigmas": [0.1, 0.1, 0.1, 0.1]})
    assert hand.flip_pairs == ((1, 2),) and hand.skeleton == ((0, 1), (0, 2), (0, 3))
    assert list(hand.flip_index) == [0, 2, 1, 3]
    assert DatasetInfo.from_category(cat).sigmas is None
    with pytest.raises(ValueError, match="sigmas"):
        DatasetInfo.from_category(cat, {"sigmas": [0.1]})
    with pytest.raises(ValueError, match="unknown dataset info"):
        DatasetInfo.from_category(cat, {"sigma": [0.1] * 4})
