"""COCO evaluation: AP of ground truth, OKS-NMS, rescoring, PCK/EPE, flip test, full pipeline."""

import contextlib
import io

import numpy as np
import pytest
import torch

from kpfast.engine import evaluation as ev
from kpfast.evaluation import oks_nms


COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62,
                        1.07, 1.07, 0.87, 0.87, 0.89, 0.89]) / 10.0


def _coco(root):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(root / "annotations" / "person_keypoints_val2017.json"))


def test_ground_truth_as_predictions_scores_ap_1(coco_sample):
    pytest.importorskip("pycocotools")
    coco = _coco(coco_sample)
    results = ev.gt_as_results(coco)
    assert len(results) == 12  # the 12 persons with keypoints
    stats = ev.evaluate_coco(coco, results, COCO_SIGMAS)
    for name in ("AP", "AP50", "AP75", "AR"):
        assert stats[name] == pytest.approx(1.0), name
    # Moving every keypoint by a few pixels must lower AP: the metric is really looking.
    shifted = [dict(r, keypoints=[v + (6.0 if i % 3 != 2 else 0.0) for i, v in enumerate(r["keypoints"])])
               for r in results]
    assert ev.evaluate_coco(coco, shifted, COCO_SIGMAS)["AP"] < 0.9


def test_empty_results_give_zero():
    pytest.importorskip("pycocotools")
    assert ev.evaluate_coco(None, [], COCO_SIGMAS)["AP"] == 0.0


def test_instance_score_is_box_score_times_mean_confident_keypoints():
    assert ev.instance_score(np.array([0.9, 0.1, 0.5, 0.3]), 0.8, 0.2) == pytest.approx(0.8 * (0.9 + 0.5 + 0.3) / 3)
    assert ev.instance_score(np.array([0.1, 0.1]), 0.8, 0.2) == 0.0


def test_oks_nms_suppresses_duplicates_and_keeps_distinct_people():
    rng = np.random.default_rng(0)
    person = np.concatenate([rng.uniform(100, 200, (17, 2)), np.ones((17, 1))], axis=1)
    near_copy = person.copy()
    near_copy[:, :2] += 0.5
    other = person.copy()
    other[:, 0] += 300
    kps = np.stack([near_copy, person, other])
    keep = oks_nms(kps, np.array([0.7, 0.9, 0.8]), np.array([1e4, 1e4, 1e4]), COCO_SIGMAS, 0.9, "kpfast")
    assert keep == [1, 2]  # best of the duplicates, then the other person


def test_pck_and_epe_known_values():
    gt = np.zeros((1, 3, 2))
    pred = np.array([[[3.0, 4.0], [30.0, 40.0], [0.0, 0.0]]])
    visible = np.array([[True, True, False]])
    out = ev.pck_and_epe(pred, gt, visible, np.array([[100.0, 50.0]]), 0.2)
    # Normaliser max(w, h) = 100: distances 5 (correct, < 20) and 50 (wrong); the third is not visible.
    assert out["PCK"] == pytest.approx(0.5) and out["EPE"] == pytest.approx(27.5) and out["num_keypoints"] == 2
    with pytest.raises(ValueError, match="shapes"):
        ev.pck_and_epe(pred, gt[:, :2], visible, np.ones((1, 2)))


def test_flip_test_merge_recovers_heatmaps_of_flipped_keypoints():
    """The codec's flip_merge (kpfast.ops.flip_merge) puts a mirrored prediction back in the original frame."""
    from kpfast.codecs import HeatmapCodec
    from kpfast.ops import render_heatmaps

    h, w = 16, 12
    kps = torch.tensor([[[2.3, 4.1], [8.7, 9.6], [5.0, 12.2]]])
    pairs = [(1, 2)]
    flipped = kps.clone()
    flipped[..., 0] = (w - 1) - flipped[..., 0]  # pixel-centre flip x -> W-1-x
    flipped = flipped[:, [0, 2, 1]]  # left/right swap
    plain, _ = render_heatmaps(kps, size=(h, w), sigma=1.5, encoding="udp", backend="torch")
    mirror, _ = render_heatmaps(flipped, size=(h, w), sigma=1.5, encoding="udp", backend="torch")
    codec = HeatmapCodec(input_size=(4 * h, 4 * w), heatmap_size=(h, w), encoding="udp", flip_pairs=pairs)
    torch.testing.assert_close(codec.flip_merge(plain, mirror), plain, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flip_pairs"):
        HeatmapCodec(input_size=(4 * h, 4 * w), heatmap_size=(h, w), flip_pairs=[(0, 5)]).flip_merge(plain, mirror)


class _OracleModel(torch.nn.Module):
    """Returns ground-truth heatmaps for the samples of the evaluation loader, in order."""

    stride = 4

    def __init__(self, dataset, sigma):
        super().__init__()
        self.dataset = dataset
        self.position = 0
        self.sigma = sigma
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, images):
        from kpfast.ops import render_heatmaps

        samples = [self.dataset[self.position + i] for i in range(images.shape[0])]
        self.position += images.shape[0]
        kps = torch.stack([s["keypoints"] for s in samples])
        weights = torch.stack([s["weights"] for s in samples])
        heatmaps, _ = render_heatmaps(kps, weights, size=tuple(images.shape[-2:][i] // 4 for i in range(2)),
                                      sigma=self.sigma, encoding="udp")
        return {"heatmaps": heatmaps}


def test_pipeline_with_ground_truth_heatmaps_recovers_ground_truth(coco_sample):
    pytest.importorskip("pycocotools")
    """Boxes -> crops -> heatmaps -> decode -> image space -> COCOeval, with perfect heatmaps."""
    import kpfast.ops

    if not hasattr(kpfast.ops, "decode_heatmaps"):
        pytest.skip("kpfast.ops.decode_heatmaps not available yet")
    from kpfast.data import build_data
    from kpfast.codecs import crop_convention
    from kpfast.engine.config import load_config

    config = load_config(None, [
        "data.dataset=coco", f"data.root={coco_sample}", "data.train_split=val2017", "data.val_split=val2017",
        "data.input_size=[256, 192]", "data.num_workers=0", "eval.flip_test=false", "eval.decoder=dark",
        "loss.kind=mse",
    ])
    data = build_data(config.data, num_keypoints=config.model.num_keypoints, convention=crop_convention(config.loss.encoding),
                      train=False)
    model = _OracleModel(data.val, sigma=2.0)
    metrics = ev.evaluate_model(model, data.val, config, torch.device("cpu"), data.info,
                                ev.load_coco_gt(data.val.ann_file))
    assert metrics["num_instances"] == 12
    assert metrics["AP"] > 0.95, metrics["summary"]
    assert metrics["PCK"] > 0.99 and metrics["EPE"] < 2.0


def test_merge_flip_averages_with_the_flipped_back_prediction():
    from kpfast.codecs import HeatmapCodec

    a = torch.rand(2, 3, 5, 4)
    b = torch.rand(2, 3, 5, 4)
    back = b.flip(-1)[:, [0, 2, 1]]
    udp = HeatmapCodec(input_size=(20, 16), heatmap_size=(5, 4), encoding="udp", flip_pairs=[(1, 2)])
    msra = HeatmapCodec(input_size=(20, 16), heatmap_size=(5, 4), encoding="msra", flip_pairs=[(1, 2)])
    torch.testing.assert_close(udp.flip_merge(a, b), 0.5 * (a + back))
    shifted = msra.flip_merge(a, b)  # MSRA maps flip about the edge: shifted one pixel back
    torch.testing.assert_close(shifted[..., 1:], 0.5 * (a[..., 1:] + back[..., :-1]))
