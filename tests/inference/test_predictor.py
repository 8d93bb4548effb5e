"""The Predictor: the one top-down pipeline (crop -> model -> flip test -> decode -> image pixels).

It must equal the pipeline composed by hand from kpfast.geometry and kpfast.ops, and every caller
(the trainer's evaluation, the validation images, ``python -m kpfast.eval``, ``python -m
kpfast.predict``) must run through it rather than a copy of it.
"""

import ast
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import kpfast
from kpfast import geometry
from kpfast.codecs import HeatmapCodec
from kpfast.data.transforms import normalize_image
from kpfast.inference import Predictor
from kpfast.ops import decode_heatmaps, flip_merge

K = 5
FLIP_PAIRS = ((1, 2), (3, 4))
INPUT = (32, 24)  # (H, W)
HEATMAP = (8, 6)


class _TinyNet(torch.nn.Module):
    """A small seeded network that is not mirror-symmetric (the flip test changes its output) and
    has BatchNorm with non-trivial running statistics (train and eval mode differ)."""

    stride = 4
    num_keypoints = K

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.pool = torch.nn.AvgPool2d(4)
        self.conv = torch.nn.Conv2d(3, K, 3, padding=1)
        self.norm = torch.nn.BatchNorm2d(K)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
            self.conv.bias.copy_(torch.randn(K, generator=generator))
            self.norm.running_mean.copy_(torch.randn(K, generator=generator))
            self.norm.running_var.copy_(torch.rand(K, generator=generator) + 0.5)

    def forward(self, images):
        return {"heatmaps": 3.0 * self.norm(self.conv(self.pool(images)))}


def _image(seed=0, size=(90, 70)):
    rng = np.random.default_rng(seed)
    smooth = cv2.GaussianBlur(rng.uniform(0, 255, (*size, 3)).astype(np.float32), (0, 0), 3)
    return np.clip(smooth, 0, 255).astype(np.uint8)


def _codec(encoding="udp", logits=True, decoder="dark"):
    return HeatmapCodec(input_size=INPUT, heatmap_size=HEATMAP, encoding=encoding, decoder=decoder,
                        blur_kernel=3, flip_pairs=FLIP_PAIRS, logits=logits)


def _by_hand(net, image, boxes, encoding, logits, flip, decoder):
    """The pipeline written out with kpfast.geometry / kpfast.ops / OpenCV only."""
    convention = "standard" if encoding == "msra" else "udp"
    in_wh, hm_wh = INPUT[::-1], HEATMAP[::-1]
    crops, to_heatmap = [], []
    for box in boxes:
        center, scale = geometry.bbox_xywh_to_center_scale(np.asarray(box, np.float64), in_wh[0] / in_wh[1], 1.25)
        matrix = geometry.crop_matrix(center, scale, 0.0, in_wh, convention)
        crop = cv2.warpAffine(image, matrix, in_wh, flags=cv2.INTER_LINEAR)
        crops.append(torch.from_numpy(normalize_image(np.ascontiguousarray(cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)))))
        to_heatmap.append(geometry.image_to_heatmap_matrix(center, scale, 0.0, in_wh, hm_wh, convention))
    crops = torch.stack(crops)
    net.eval()
    with torch.no_grad():
        activate = torch.sigmoid if logits else (lambda t: t)
        heatmaps = activate(net(crops)["heatmaps"].float())
        if flip:
            mirrored = activate(net(crops.flip(-1))["heatmaps"].float())
            heatmaps = flip_merge(heatmaps, mirrored, FLIP_PAIRS, shift=encoding == "msra")
    coords, scores = decode_heatmaps(heatmaps, method=decoder, blur_kernel=3)
    xy = geometry.transform_points(coords.double().numpy(), geometry.invert_affine(np.stack(to_heatmap)))
    return np.concatenate([xy, scores.double().numpy()[..., None]], axis=-1)


@pytest.mark.parametrize("encoding,logits,flip,decoder", [
    ("udp", True, True, "dark"), ("udp", False, False, "udp"), ("msra", True, True, "quarter"),
    ("dark", False, True, "argmax")])
def test_predictor_equals_the_pipeline_composed_by_hand(encoding, logits, flip, decoder):
    net = _TinyNet()
    image = _image()
    boxes = [[5.0, 8.0, 40.0, 60.0], [20.5, 3.25, 33.0, 51.0], [0.0, 0.0, 70.0, 90.0]]
    expected = _by_hand(net, image, boxes, encoding, logits, flip, decoder)
    net.train()  # the predictor must evaluate in eval mode and give the mode back
    predictor = Predictor(net, _codec(encoding, logits, decoder), "cpu", flip_test=flip)
    got = predictor.predict_image(image, boxes)
    assert net.training
    assert got.shape == (3, K, 3)
    np.testing.assert_array_equal(got, expected)
    # The list form is the one-image form per image.
    second = _image(1, (50, 64))
    both = predictor.predict([image, second], [boxes, boxes[:1]])
    np.testing.assert_array_equal(both[0], got)
    np.testing.assert_array_equal(both[1], predictor.predict_image(second, boxes[:1]))


def test_flip_test_and_activation_change_the_prediction():
    """Guards the test above: with this network, flip test and sigmoid are not no-ops."""
    net = _TinyNet()
    crops = torch.randn(2, 3, *INPUT, generator=torch.Generator().manual_seed(1))
    plain = Predictor(net, _codec(logits=False), "cpu").heatmaps(crops)
    flipped = Predictor(net, _codec(logits=False), "cpu", flip_test=True).heatmaps(crops)
    activated = Predictor(net, _codec(logits=True), "cpu").heatmaps(crops)
    assert not torch.allclose(plain, flipped, atol=1e-3)
    torch.testing.assert_close(activated, plain.sigmoid())
    assert activated.min() >= 0 and activated.max() <= 1


def test_batch_prediction_maps_through_each_samples_affine():
    """predict_batch (evaluation's entry) = heatmap-pixel decode mapped by each sample's affine."""
    net = _TinyNet()
    codec = _codec()
    predictor = Predictor(net, codec, "cpu", flip_test=True)
    crops = torch.randn(3, 3, *INPUT, generator=torch.Generator().manual_seed(2))
    centers = np.array([[30.0, 40.0], [50.5, 20.0], [10.0, 12.0]])
    scales = np.array([[24.0, 32.0], [48.0, 64.0], [12.0, 16.0]])
    affines = codec.image_to_heatmap_matrix(centers, scales, np.array([0.0, 15.0, -30.0]),
                                            np.array([False, True, False]))
    metas = [{"affine": a.astype(np.float32)} for a in affines]
    image_xy, scores = predictor.predict_batch({"image": crops}, metas)
    coords, expected_scores = codec.decode(predictor.heatmaps(crops))
    matrices = np.stack([m["affine"].astype(np.float64) for m in metas])
    np.testing.assert_array_equal(image_xy, geometry.transform_points(coords, geometry.invert_affine(matrices)))
    np.testing.assert_array_equal(scores, expected_scores)
    # Sanity of the frame: mapping back to heatmap pixels gives the decoded coordinates.
    np.testing.assert_allclose(geometry.transform_points(image_xy, matrices), coords, atol=1e-9)
    # Crop pixels (the validation images' frame): the UDP scaling (input - 1) / (heatmap - 1).
    in_crop = predictor.predict_crops(crops, space="crop").coords
    np.testing.assert_allclose(in_crop, coords * [(INPUT[1] - 1) / (HEATMAP[1] - 1), (INPUT[0] - 1) / (HEATMAP[0] - 1)],
                               rtol=1e-12)
    with pytest.raises(ValueError, match="space: expected 'heatmap' or 'crop'.*got 'image'"):
        predictor.predict_crops(crops, space="image")


def test_predict_refuses_boxes_that_are_not_four_numbers():
    predictor = Predictor(_TinyNet(), _codec(), "cpu")
    with pytest.raises(ValueError, match=r"boxes: .*\[x, y, w, h\].*\[1\.0, 2\.0, 3\.0\]"):
        predictor.predict_image(_image(), [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="boxes: expected one list of boxes per image, got 1 for 2 images"):
        predictor.predict([_image(), _image(1)], [[[0, 0, 10, 10]]])
    assert predictor.predict_image(_image(), []).shape == (0, K, 3)
    with pytest.raises(ValueError, match=r"image: expected an \(H, W, 3\) uint8 BGR array, got shape \(90, 70\) uint8"):
        predictor.predict_image(_image()[..., 0], [[0, 0, 10, 10]])


def test_from_config_reads_the_evaluation_settings(tiny_overrides):
    from kpfast.engine.config import load_config

    config = load_config(None, list(tiny_overrides) + ["eval.flip_test=true", "train.precision=bf16",
                                                       "loss.kind=mse", "loss.encoding=msra"])
    predictor = Predictor.from_config(config, _TinyNet(), torch.device("cpu"), FLIP_PAIRS)
    assert predictor.flip_test and predictor.precision == "bf16"
    codec = predictor.codec
    assert codec.input_size == (64, 48) and codec.heatmap_size == (16, 12)
    assert codec.encoding == "msra" and codec.flip_shift and not codec.logits and codec.flip_pairs == FLIP_PAIRS


# --------------------------------------------------------------------------- the four callers

CALLERS = ("kpfast/engine/evaluation.py", "kpfast/engine/visualize.py", "kpfast/eval.py", "kpfast/predict.py")
PACKAGE_ROOT = Path(kpfast.__file__).resolve().parents[1]


def _imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_caller_keeps_a_copy_of_the_pipeline():
    """The pieces of the pipeline (decode, flip merge, crop warp, frame maps) appear in no caller:
    they are the Predictor's and the codec's. The old engine/inference.py is gone."""
    assert not (PACKAGE_ROOT / "kpfast" / "engine" / "inference.py").exists()
    pieces = ("decode_heatmaps", "flip_merge", "warpAffine", "predict_heatmaps", "transform_points",
              "invert_affine", "crop_matrix", "heatmap_scale", "autocast", "sigmoid")
    for caller in CALLERS:
        source = (PACKAGE_ROOT / caller).read_text()
        assert [p for p in pieces if p in source] == [], caller
    for caller in ("kpfast/engine/evaluation.py", "kpfast/engine/visualize.py", "kpfast/predict.py"):
        assert "kpfast.inference.Predictor" in _imported_names(PACKAGE_ROOT / caller), caller
    # kpfast.eval evaluates through the trainer's evaluator (which holds the Predictor).
    assert "kpfast.engine.evaluation.Evaluator" in _imported_names(PACKAGE_ROOT / "kpfast/eval.py")


@pytest.fixture
def spy(monkeypatch):
    """Counts Predictor.heatmaps calls (the network runs nowhere else) and keeps their results."""
    calls = []
    original = Predictor.heatmaps

    def heatmaps(self, crops):
        out = original(self, crops)
        calls.append((self, out))
        return out

    monkeypatch.setattr(Predictor, "heatmaps", heatmaps)
    return calls


@pytest.fixture
def checkpoint(tiny_overrides):
    """An untrained tiny checkpoint (last.pt at epoch 0): enough to run the callers."""
    pytest.importorskip("pycocotools")
    from kpfast.engine.config import load_config
    from kpfast.engine.trainer import Trainer

    trainer = Trainer(load_config(None, list(tiny_overrides) + ["train.run_name=spy", "eval.flip_test=true"]),
                      log=lambda text: None)
    trainer.save_last()
    return trainer, trainer.run_dir / "last.pt"


def test_trainer_evaluation_and_validation_images_run_the_predictor(checkpoint, spy, tmp_path):
    from kpfast.engine.visualize import save_prediction_grid

    trainer, _ = checkpoint
    metrics = trainer.evaluator(trainer.model)
    assert metrics["num_instances"] == len(trainer.data.val)
    assert sum(out.shape[0] for _, out in spy) == len(trainer.data.val)
    assert all(p.flip_test and p.codec.flip_pairs == tuple(map(tuple, trainer.dataset_info.flip_pairs))
               for p, _ in spy)
    spy.clear()
    save_prediction_grid(trainer.model, trainer.data.val, trainer.config, trainer.device, trainer.dataset_info,
                         tmp_path / "grid.jpg", num_samples=3)
    assert (tmp_path / "grid.jpg").is_file() and [out.shape[0] for _, out in spy] == [3]


def test_eval_and_predict_cli_run_the_predictor(checkpoint, spy, synthetic_root, tmp_path):
    from kpfast import eval as eval_cli
    from kpfast import predict as predict_cli
    from kpfast.data.transforms import read_image_checked

    trainer, path = checkpoint
    assert eval_cli.main(["--checkpoint", str(path), "--metrics", str(tmp_path / "m.json")]) == 0
    assert sum(out.shape[0] for _, out in spy) == len(trainer.data.val)
    spy.clear()
    image = sorted((synthetic_root / "images" / "val2017").glob("*.jpg"))[0]
    boxes = [[4.0, 6.0, 50.0, 80.0], [20.0, 10.0, 40.0, 60.0]]
    (tmp_path / "boxes.json").write_text(json.dumps({image.name: boxes}))
    assert predict_cli.main(["--checkpoint", str(path), str(image), "--boxes", str(tmp_path / "boxes.json"),
                             "--output-dir", str(tmp_path / "out")]) == 0
    assert [out.shape[0] for _, out in spy] == [2]
    # What predict wrote is the Predictor's answer for that image and those boxes.
    predictor = spy[0][0]
    expected = predictor.predict_image(read_image_checked(image)[0], boxes)
    written = json.loads((tmp_path / "out" / "results.json").read_text())
    np.testing.assert_array_equal(np.array([r["keypoints"] for r in written]), expected.reshape(2, -1))
    # The Python use documented in docs/training.md ("Inference and export") gives the same.
    from kpfast.engine.checkpointer import model_from_checkpoint
    from kpfast.engine.checkpointer import load_training_checkpoint
    from kpfast.engine.config import config_from_dict

    state = load_training_checkpoint(path)
    config = config_from_dict(state["config"])
    model = model_from_checkpoint(state, config)
    documented = Predictor.from_config(config, model, "cpu", state["dataset_info"]["flip_pairs"])
    np.testing.assert_array_equal(documented.predict_image(cv2.imread(str(image)), boxes), expected)
