"""Pretrained weights through every command (docs/pretrained.md, "Commands"): ``--weights`` on
eval, predict and export, ``--init-weights`` on train, ``--ema`` (and the former ``--weights
auto|ema|model`` beside ``--checkpoint``). Files are generated here in MMPose 1.x / 0.x layouts
from randomised networks; the coco_sample photos are used where present (skipped otherwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_pretrained import _mmpose_0x, _mmpose_1x, _randomised

from kpfast import eval as eval_cli
from kpfast import export as export_cli
from kpfast import predict as predict_cli
from kpfast import train as train_cli
from kpfast.engine.arguments import load_weights
from kpfast.engine.config import config_to_dict, load_config
from kpfast.models import build_model

SIZE = "data.input_size=[128, 96]"
NARROW = {"base_width": 8, "num_branches": 2, "num_modules": [1, 1, 1], "stem_channels": 8}



@pytest.fixture(scope="module")
def weight_files(tmp_path_factory) -> dict[str, Path]:
    """One randomised litehrnet_18 saved in MMPose 1.x and in MMPose 0.x layout."""
    source = _randomised()
    folder = tmp_path_factory.mktemp("weights")
    files = {"1.x": folder / "mmpose1.pth", "0.x": folder / "mmpose0.pth"}
    torch.save(_mmpose_1x(source), files["1.x"])
    torch.save(_mmpose_0x(source), files["0.x"])
    return files


def _metrics_and_results(root: Path, tmp_path: Path, weights: Path, name: str) -> tuple[dict, list]:
    metrics, results = tmp_path / f"{name}_metrics.json", tmp_path / f"{name}_results.json"
    code = eval_cli.main(["--weights", str(weights), "--config", "coco_sample_overfit", "--device", "cpu",
                          "--workers", "0", "--set", f"data.root={root}", "--set", SIZE,
                          "--set", "eval.protocol=mmpose", "--metrics", str(metrics), "--results", str(results)])
    assert code == 0
    return json.loads(metrics.read_text()), json.loads(results.read_text())


def test_eval_runs_mmpose_files_on_coco_sample_under_mmpose_protocol(tmp_path, weight_files, coco_sample):
    """``python -m kpfast.eval --weights <MMPose file> --set eval.protocol=mmpose`` on the real
    photos: the network comes from the file (no kpfast checkpoint, no model config), and both
    layouts give the same predictions."""
    metrics, results = _metrics_and_results(coco_sample, tmp_path, weight_files["1.x"], "v1")
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["num_instances"] == 12  # the 12 persons with keypoints
    assert results and all(len(r["keypoints"]) == 17 * 3 for r in results)
    assert {r["image_id"] for r in results} <= {785, 40083, 196141, 197388}
    metrics_0x, results_0x = _metrics_and_results(coco_sample, tmp_path, weight_files["0.x"], "v0")
    assert results_0x == results and metrics_0x["AP"] == metrics["AP"]


def test_predict_runs_both_mmpose_layouts_and_they_agree(tmp_path, weight_files, coco_sample):
    image = sorted((coco_sample / "images" / "val2017").glob("*.jpg"))[0]
    outputs = {}
    for layout, path in weight_files.items():
        out = tmp_path / layout
        assert predict_cli.main(["--weights", str(path), str(image), "--output-dir", str(out), "--device", "cpu",
                                 "--set", SIZE]) == 0
        outputs[layout] = json.loads((out / "results.json").read_text())
    assert len(outputs["1.x"]) == 1 and len(outputs["1.x"][0]["keypoints"]) == 17 * 3
    assert outputs["0.x"] == outputs["1.x"]


def test_export_takes_mmpose_weights_and_the_graph_has_their_size(tmp_path, weight_files):
    onnx = pytest.importorskip("onnx")
    for layout, path in weight_files.items():
        output = tmp_path / f"{layout}.onnx"
        assert export_cli.main(["--weights", str(path), "--output", str(output), "--set", SIZE]) == 0
        graph = onnx.load(str(output)).graph
        dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
        assert dims[1:] == [3, 128, 96]
        assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == 17  # the file's keypoints


def test_a_network_the_file_does_not_fit_is_one_error_naming_the_keys(weight_files):
    args = eval_cli.build_parser().parse_args(["--weights", str(weight_files["1.x"]), "--set",
                                               "model.name=litehrnet_30"])
    with pytest.raises(ValueError, match=r"does not fit the network: .*missing"):
        load_weights(args, check_machine=False)
    args = eval_cli.build_parser().parse_args(["--weights", str(weight_files["1.x"]), "--set", "model.num_keypoints=14"])
    with pytest.raises(ValueError, match=r"no weights for head\.final_layer\.weight, head\.final_layer\.bias"):
        load_weights(args, check_machine=False)


def _kpfast_checkpoint(path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    trained, ema = _randomised(seed=2), _randomised(seed=3)
    config = config_to_dict(load_config("default", ["model.overrides={}"]))
    torch.save({"config": config, "model": trained.state_dict(), "ema": {"module": ema.state_dict(), "updates": 3},
                "dataset_info": None}, path)
    return trained, ema


def _same_weights(model, reference) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_ema_flag_and_the_former_weights_spelling(tmp_path, capsys):
    checkpoint = tmp_path / "best.pt"
    trained, ema = _kpfast_checkpoint(checkpoint)
    parse = eval_cli.build_parser().parse_args
    assert _same_weights(load_weights(parse(["--checkpoint", str(checkpoint)]), check_machine=False).model, ema)
    assert _same_weights(load_weights(parse(["--checkpoint", str(checkpoint), "--ema", "off"]),
                                      check_machine=False).model, trained)
    capsys.readouterr()
    old = load_weights(parse(["--checkpoint", str(checkpoint), "--weights", "model"]), check_machine=False)
    assert _same_weights(old.model, trained)
    assert "--weights model with --checkpoint is deprecated; use --ema off" in capsys.readouterr().err
    with pytest.raises(ValueError, match="contradicts --ema on"):
        load_weights(parse(["--checkpoint", str(checkpoint), "--weights", "model", "--ema", "on"]))
    # The same file through --weights: its EMA weights, its own network.
    assert _same_weights(load_weights(parse(["--weights", str(checkpoint)]), check_machine=False).model, ema)


@pytest.mark.parametrize("argv, message", [
    ([], "--checkpoint or --weights: one is required"),
    (["--checkpoint", "a.pt", "--weights", "b.pth"], "--checkpoint and --weights: give one"),
    (["--weights", "ema"], "former spelling of --ema"),
])
def test_weights_arguments_are_checked_in_one_line(argv, message):
    with pytest.raises(ValueError, match=message):
        load_weights(eval_cli.build_parser().parse_args(argv), check_machine=False)


def _narrow_file(path: Path, num_keypoints: int, layout) -> torch.nn.Module:
    model = build_model("litehrnet_18", num_keypoints=num_keypoints, **{k: tuple(v) if isinstance(v, list) else v
                                                                       for k, v in NARROW.items()})
    generator = torch.Generator().manual_seed(num_keypoints)
    with torch.no_grad():
        for key, value in model.state_dict().items():
            if value.is_floating_point():
                value.copy_(torch.rand(value.shape, generator=generator) * 0.2 + (0.5 if "running_var" in key else 0))
    torch.save(layout(model), path)
    return model


@pytest.mark.parametrize("layout", [_mmpose_1x, _mmpose_0x], ids=["1.x", "0.x"])
def test_train_init_weights_loads_strictly_and_lists_reinitialised_heads(tmp_path, capsys, layout):
    """--init-weights: same keypoints, every tensor comes from the file; another keypoint count
    (a 14-keypoint file for the 17-keypoint synthetic set) re-initialises the head, named in the log."""
    from kpfast.data import ensure_synthetic_dataset

    root = ensure_synthetic_dataset(tmp_path / "ds", num_train=24, num_val=4, seed=0)
    overrides = ["data.dataset=synthetic", f"data.root={root}", "data.synthetic_num_train=24",
                 "data.synthetic_num_val=4", "data.input_size=[64, 48]", "data.num_workers=0",
                 f"model.overrides={json.dumps(NARROW)}", "train.batch_size=16", "train.max_steps=1", "train.epochs=1",
                 "train.visualize_samples=0", "eval.flip_test=false", f"train.output_dir={tmp_path / 'runs'}",
                 "train.device=cpu"]
    common = [item for override in overrides for item in ("--set", override)]
    same = _narrow_file(tmp_path / "same.pth", 17, layout)
    other = _narrow_file(tmp_path / "other.pth", 14, layout)

    from kpfast.engine.trainer import Trainer

    config = load_config("default", overrides)
    trainer = Trainer(config, init_weights=tmp_path / "same.pth", log=lambda text: None)
    assert trainer.init_report.reinitialised == []
    assert _same_weights(trainer.model, same)
    trainer = Trainer(config, init_weights=tmp_path / "other.pth", log=lambda text: None)
    assert trainer.init_report.reinitialised == ["head.final_layer.weight", "head.final_layer.bias"]
    loaded = trainer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in other.state_dict().items() if k.startswith("backbone."))

    capsys.readouterr()
    assert train_cli.main(["--init-weights", str(tmp_path / "other.pth"), *common]) == 0
    log = capsys.readouterr().out
    assert "initial weights: " in log and "re-initialised (not in the file, or another shape): " \
        "head.final_layer.weight, head.final_layer.bias" in log
    with pytest.raises(ValueError, match="a resumed run continues its own weights"):
        train_cli.main(["--init-weights", str(tmp_path / "same.pth"), "--resume", str(tmp_path / "runs"), *common])
