"""kpfast's and MMPose's evaluation protocols (docs/pretrained.md, "Evaluation protocols"): each
test sets up a case where the two rules give different answers and checks both."""

from __future__ import annotations

import numpy as np
import pytest

from kpfast.data.coco import clip_boxes_xywh
from kpfast.data import build_data
from kpfast.codecs import crop_convention
from kpfast.engine.config import ConfigError, load_config
from kpfast.engine.evaluation import records_to_results
from kpfast.evaluation import mmpose_box_areas, oks_nms, select_instances

K = 17
SIGMAS = np.full(K, 0.05)


def _pose(offset: float, score: float = 0.9) -> np.ndarray:
    xy = np.stack([np.linspace(10, 50, K), np.linspace(20, 90, K)], axis=1) + offset
    return np.concatenate([xy, np.full((K, 1), score)], axis=1)


def _oks(d: float, area: float) -> float:
    return float(np.exp(-(d * d * 2) / (2 * SIGMAS) ** 2 / area / 2).mean())


def test_the_nms_area_is_the_reference_instance_s_for_kpfast_and_the_pair_s_mean_for_mmpose():
    # A small best instance and a large neighbour 2 px away: by the small area alone they are
    # different people (OKS < 0.9), by the mean area the same one (OKS > 0.9).
    kps = np.stack([_pose(0.0), _pose(2.0)])
    areas = np.array([400.0, 40000.0])
    assert _oks(2.0, 400.0) < 0.9 < _oks(2.0, (400.0 + 40000.0) / 2)
    scores = np.array([0.9, 0.8])
    assert oks_nms(kps, scores, areas, SIGMAS, 0.9, "kpfast") == [0, 1]
    assert oks_nms(kps, scores, areas, SIGMAS, 0.9, "mmpose") == [0]


def test_equal_scores_keep_the_first_instance_for_kpfast_and_the_last_for_mmpose():
    kps = np.stack([_pose(0.0), _pose(0.0)])
    areas = np.array([1000.0, 1000.0])
    scores = np.array([0.5, 0.5])
    assert oks_nms(kps, scores, areas, SIGMAS, 0.9, "kpfast") == [0]
    assert oks_nms(kps, scores, areas, SIGMAS, 0.9, "mmpose") == [1]  # argsort()[::-1], as MMPose


def test_mmpose_s_area_is_the_padded_aspect_fixed_crop_box():
    # 30x80 box, 256x192 input (w/h 0.75): widened to 60x80, padded by 1.25 -> 75x100.
    assert mmpose_box_areas(np.array([[5.0, 5.0, 30.0, 80.0]]), (256, 192)) == pytest.approx([7500.0])
    # 120x80: heightened to 120x160 -> 150x200.
    assert mmpose_box_areas(np.array([[0.0, 0.0, 120.0, 80.0]]), (256, 192)) == pytest.approx([30000.0])


def _record(offset, bbox, area=0.0):
    return {"image_id": 1, "keypoints": _pose(offset), "box_score": 1.0, "bbox": bbox, "area": area}


def test_ground_truth_boxes_go_through_nms_only_under_mmpose():
    records = [_record(0.0, [0, 0, 60, 100], 3000.0), _record(0.5, [0, 0, 60, 100], 3000.0)]
    scores = np.array([0.9, 0.8])
    common = dict(use_gt_boxes=True, nms_threshold=0.9, sigmas=SIGMAS, input_size=(256, 192))
    assert select_instances(records, scores, protocol="kpfast", **common) == [0, 1]
    assert select_instances(records, scores, protocol="mmpose", **common) == [0]
    # Detector boxes: both protocols suppress the duplicate.
    common["use_gt_boxes"] = False
    assert select_instances(records, scores, protocol="kpfast", **common) == [0]
    assert select_instances(records, scores, protocol="mmpose", **common) == [0]


def test_select_instances_uses_the_crop_box_area_under_mmpose():
    # Annotation area 400 (kpfast's reference) vs a 60x100 box's crop area 75*125 (MMPose's).
    records = [_record(0.0, [0, 0, 60, 100], 400.0), _record(2.0, [0, 0, 60, 100], 400.0)]
    scores = np.array([0.9, 0.8])
    assert _oks(2.0, 400.0) < 0.9 < _oks(2.0, 75 * 125)
    common = dict(use_gt_boxes=False, nms_threshold=0.9, sigmas=SIGMAS, input_size=(256, 192))
    assert select_instances(records, scores, protocol="kpfast", **common) == [0, 1]
    assert select_instances(records, scores, protocol="mmpose", **common) == [0]


def test_records_to_results_follows_eval_protocol():
    records = [_record(0.0, [0, 0, 60, 100], 3000.0), _record(0.5, [0, 0, 60, 100], 3000.0)]
    records[1]["keypoints"][:, 2] = 0.5
    config = load_config(None, ["data.use_gt_boxes=true"])
    assert len(records_to_results(records, config, SIGMAS)) == 2
    config = load_config(None, ["data.use_gt_boxes=true", "eval.protocol=mmpose"])
    (kept,) = records_to_results(records, config, SIGMAS)
    assert kept["score"] == pytest.approx(0.9)


def test_ground_truth_boxes_clip_to_the_image_or_to_its_last_pixel():
    sizes = np.array([[640.0, 480.0]] * 3)
    boxes = np.array([[-5.0, -5.0, 700.0, 500.0], [639.5, 10.0, 5.0, 5.0], [10.0, 10.0, 20.0, 30.0]])
    kpfast = clip_boxes_xywh(boxes, sizes, "kpfast")
    mmpose = clip_boxes_xywh(boxes, sizes, "mmpose")
    np.testing.assert_allclose(kpfast[0], [0, 0, 640, 480])
    np.testing.assert_allclose(mmpose[0], [0, 0, 639, 479])
    assert kpfast[1, 2] == pytest.approx(0.5) and mmpose[1, 2] <= 0  # MMPose drops it: no width left
    np.testing.assert_allclose(kpfast[2], boxes[2])
    np.testing.assert_allclose(mmpose[2], boxes[2])
    np.testing.assert_allclose(clip_boxes_xywh(boxes[:1], np.zeros((1, 2)), "mmpose")[0, :2], [0, 0])  # no size: no upper clip


def test_the_protocol_reaches_the_evaluation_dataset_only(tmp_path):
    config = load_config(None, ["eval.protocol=mmpose", f"data.root={tmp_path / 'synthetic'}",
                                "data.synthetic_num_train=2", "data.synthetic_num_val=2"])
    data = build_data(config.data, num_keypoints=config.model.num_keypoints, convention=crop_convention(config.loss.encoding),
                      protocol=config.eval.protocol)
    assert data.val.protocol == "mmpose"
    assert data.train.protocol == "kpfast"


def test_an_unknown_protocol_is_named():
    with pytest.raises(ConfigError, match=r"eval\.protocol.*'coco'"):
        load_config(None, ["eval.protocol=coco"])
    with pytest.raises(ValueError, match="protocol.*'coco'"):
        clip_boxes_xywh(np.zeros((1, 4)), np.ones((1, 2)), "coco")
    with pytest.raises(ValueError, match="eval.protocol.*'coco'"):
        oks_nms(np.zeros((1, K, 3)), np.ones(1), np.ones(1), SIGMAS, 0.9, "coco")
