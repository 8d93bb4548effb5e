"""A COCO-format keypoint set with K != 17 trains and evaluates by config alone (docs/data.md,
"Datasets"): a CrowdPose-style (K=14) set made from the synthetic generator's images."""

import json

import numpy as np
import pytest
import yaml

from kpfast.data.coco import load_coco_gt
from kpfast.engine.checkpointer import load_checkpoint
from kpfast.engine.config import load_config
from kpfast.engine.trainer import Trainer

pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

# CrowdPose's 14 keypoints and OKS sigmas (its evaluation code); the skeleton is 1-based as in
# annotation files.
CROWDPOSE_NAMES = ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
                   "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck"]
CROWDPOSE_SIGMAS = [0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
                    0.079, 0.079]
CROWDPOSE_SKELETON = [[13, 14], [14, 1], [14, 2], [1, 3], [3, 5], [2, 4], [4, 6], [1, 7], [2, 8], [7, 9],
                      [9, 11], [8, 10], [10, 12]]


def _to_crowdpose(coco17: np.ndarray) -> np.ndarray:
    """(17, 3) COCO keypoints -> (14, 3): the 12 limb joints, the nose as head, the shoulders'
    midpoint as neck (labelled only when both shoulders are)."""
    out = np.zeros((14, 3))
    out[:12] = coco17[5:17]
    out[12] = coco17[0]
    shoulders = coco17[5:7]
    if (shoulders[:, 2] > 0).all():
        out[13, :2] = shoulders[:, :2].mean(axis=0)
        out[13, 2] = min(shoulders[:, 2])
    return out


@pytest.fixture(scope="module")
def crowdpose_root(tmp_path_factory):
    from kpfast.data.synthetic import generate_synthetic_dataset

    root = tmp_path_factory.mktemp("crowdpose")
    generate_synthetic_dataset(root, num_train=16, num_val=4, seed=3)
    for split in ("train2017", "val2017"):
        path = root / "annotations" / f"person_keypoints_{split}.json"
        data = json.loads(path.read_text())
        for ann in data["annotations"]:
            kps = _to_crowdpose(np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3))
            ann["keypoints"] = [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(kps.ravel())]
            ann["num_keypoints"] = int((kps[:, 2] > 0).sum())
        data["categories"] = [{"id": 1, "name": "person", "keypoints": CROWDPOSE_NAMES,
                               "skeleton": CROWDPOSE_SKELETON}]
        path.write_text(json.dumps(data))
    return root


def test_a_fourteen_keypoint_coco_format_set_trains_and_evaluates_by_config(crowdpose_root, tmp_path):
    config_file = tmp_path / "crowdpose.yaml"
    config_file.write_text(yaml.safe_dump({
        "model": {"num_keypoints": 14,
                  "overrides": {"base_width": 8, "num_branches": 2, "num_modules": [1, 1, 1], "stem_channels": 8}},
        "data": {"dataset": "coco", "root": str(crowdpose_root), "input_size": [64, 48], "num_workers": 0,
                 "dataset_options": {"dataset_info": {"sigmas": CROWDPOSE_SIGMAS}}},
        "train": {"epochs": 1, "batch_size": 8, "visualize_samples": 0, "output_dir": str(tmp_path / "runs"),
                  "run_name": "k14"},
        "eval": {"flip_test": True},
    }))
    trainer = Trainer(load_config(config_file), log=lambda s: None)
    info = trainer.dataset_info
    assert info.keypoint_names == tuple(CROWDPOSE_NAMES)
    # Flip pairs from the left_/right_ names; the skeleton from the category, made 0-based.
    assert set(info.flip_pairs) == {(2 * i, 2 * i + 1) for i in range(6)}
    assert info.skeleton[0] == (12, 13)
    np.testing.assert_allclose(info.sigmas, CROWDPOSE_SIGMAS)
    result = trainer.train()
    assert result.epochs_completed == 1
    assert 0.0 <= result.final_metrics["AP"] <= 1.0
    assert result.final_metrics["num_instances"] == len(trainer.data.val)
    stored = load_checkpoint(result.run_dir / "last.pt")
    assert stored["dataset_info"]["sigmas"] == pytest.approx(CROWDPOSE_SIGMAS)


def test_oks_evaluation_uses_the_fourteen_sigmas(crowdpose_root):
    """Ground truth scored as results has AP 1 under the 14 sigmas; pycocotools' default 17
    would not even run on 14 keypoints."""
    from kpfast.data import DataConfig, build_data
    from kpfast.engine.evaluation import evaluate_coco, gt_as_results

    config = DataConfig.model_validate({"dataset": "coco", "root": str(crowdpose_root), "input_size": [64, 48],
                                        "dataset_options": {"dataset_info": {"sigmas": CROWDPOSE_SIGMAS}}})
    data = build_data(config, num_keypoints=14, convention="udp", train=False)
    assert data.info.sigmas.shape == (14,)
    coco_gt = load_coco_gt(data.val.ann_file)
    metrics = evaluate_coco(coco_gt, gt_as_results(coco_gt), sigmas=data.info.sigmas)
    assert metrics["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"model\.num_keypoints: the dataset has 14 keypoints"):
        build_data(config, num_keypoints=17, convention="udp", train=False)
