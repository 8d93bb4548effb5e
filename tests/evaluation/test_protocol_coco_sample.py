"""The MMPose protocol on the coco_sample photos, with weights read from an MMPose 1.x file
(docs/pretrained.md, "Evaluation protocols"). Skipped when coco_sample is absent."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from kpfast.codecs import crop_convention
from kpfast.engine.checkpointer import model_from_checkpoint
from kpfast.engine.config import load_config
from kpfast.engine.evaluation import evaluate_coco, instance_score, load_coco_gt, predict_instances, records_to_results
from kpfast.models import build_model
from kpfast.models.pretrained import load_pretrained

SIZE = [128, 96]  # small crops: the test checks the protocol, not the network



@pytest.fixture(scope="module")
def mmpose_file(tmp_path_factory) -> Path:
    """A litehrnet_18 with random weights and BN statistics, saved as MMPose 1.3.2 saves it."""
    model = build_model("litehrnet_18", num_keypoints=17)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) * 0.2 + (0.5 if "running_var" in key else 0))
    state = OrderedDict(model.state_dict())
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
    state["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
    path = tmp_path_factory.mktemp("weights") / "litehrnet18_coco_128x96-00000000_20240101.pth"
    torch.save({"meta": {"mmpose_version": "1.3.2", "epoch": 210}, "state_dict": state}, path)
    return path


def _config(root: Path, protocol: str, gt_boxes: bool):
    boxes = ["data.use_gt_boxes=true"] if gt_boxes else [
        "data.use_gt_boxes=false", f"data.detections={root / 'detections' / 'person_detections_val2017.json'}"]
    return load_config("coco_sample_overfit", [f"data.root={root}", "model.overrides={}", "train.device=cpu",
                                               f"data.input_size={SIZE}", f"eval.protocol={protocol}", *boxes])


def _mmpose_nms_by_hand(records, config, sigmas) -> list[int]:
    """MMPose 1.3.2's CocoMetric on one image's records, written out pair by pair: the padded,
    aspect-fixed crop box area of each instance, OKS over the pair's mean area, argsort()[::-1]."""
    h, w = config.data.input_size
    areas = []
    for r in records:
        bw, bh = r["bbox"][2], r["bbox"][3]
        bw, bh = (bw, bw * h / w) if bw > bh * w / h else (bh * w / h, bh)
        areas.append(bw * 1.25 * bh * 1.25)
    scores = np.array([instance_score(r["keypoints"][:, 2], r["box_score"], config.eval.keypoint_score_threshold)
                       for r in records])
    order, keep = list(np.argsort(scores)[::-1]), []
    while order:
        i = order.pop(0)
        keep.append(i)
        survivors = []
        for j in order:
            d2 = ((records[i]["keypoints"][:, :2] - records[j]["keypoints"][:, :2]) ** 2).sum(-1)
            oks = np.mean(np.exp(-d2 / (2 * sigmas) ** 2 / ((areas[i] + areas[j]) / 2 + np.spacing(1)) / 2))
            if oks <= config.eval.oks_nms_threshold:
                survivors.append(j)
        order = survivors
    return sorted(keep)


@pytest.mark.parametrize("gt_boxes", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["gt-boxes", "detector-boxes"])
def test_an_mmpose_checkpoint_evaluates_under_the_mmpose_protocol_on_coco_sample(mmpose_file, gt_boxes, coco_sample):
    root = coco_sample
    loaded, report = load_pretrained(str(mmpose_file))
    assert report.format == "mmpose-1.x" and report.preset == "litehrnet_18"
    config = _config(root, "mmpose", gt_boxes)
    data = _data(config)
    model = model_from_checkpoint({"model": loaded.state_dict()}, config, weights="model").eval()
    sigmas = np.asarray(data.info.sigmas, np.float64)
    records = predict_instances(model, data.val, config, torch.device("cpu"), data.info)
    assert len(records) == (12 if gt_boxes else 118)
    results = records_to_results(records, config, sigmas)
    metrics = evaluate_coco(load_coco_gt(data.val.ann_file), results, sigmas)
    assert 0.0 <= metrics["AP"] <= 1.0
    expected = sum(len(_mmpose_nms_by_hand([r for r in records if r["image_id"] == image_id], config, sigmas))
                   for image_id in {r["image_id"] for r in records})
    assert len(results) == expected  # every image's survivors are exactly MMPose's
    kpfast = records_to_results(records, _config(root, "kpfast", gt_boxes), sigmas)
    if gt_boxes:
        assert len(kpfast) == len(records)  # kpfast: no NMS between ground-truth persons
    else:
        assert len(kpfast) != len(results)  # the area rule decides differently on these photos


def test_mmpose_clips_the_coco_sample_boxes_that_reach_the_right_edge(coco_sample):
    # Annotation 531914 of image 785 (640 px wide) ends at x = 640.0, annotation 533949 at 639.21.
    root = coco_sample
    ends = {}
    for protocol in ("kpfast", "mmpose"):
        table = _data(_config(root, protocol, True)).val.instances
        rows = {int(a): i for i, a in enumerate(table.annotation_id)}
        ends[protocol] = {a: table.bbox[rows[a], 0] + table.bbox[rows[a], 2] for a in (531914, 533949)}
    assert ends["kpfast"][531914] == pytest.approx(640.0) and ends["mmpose"][531914] == pytest.approx(639.0)
    assert ends["kpfast"][533949] == pytest.approx(639.21) and ends["mmpose"][533949] == pytest.approx(639.0)


def _data(config):
    """The evaluation split of ``config``, with its protocol's ground-truth box clip."""
    from kpfast.data import build_data

    return build_data(config.data, num_keypoints=config.model.num_keypoints, convention=crop_convention(config.loss.encoding),
                      seed=config.train.seed, train=False, protocol=config.eval.protocol)
