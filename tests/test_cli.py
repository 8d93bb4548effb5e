"""The command-line entry points: train / eval / predict / export and their error messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kpfast
from kpfast import eval as eval_cli
from kpfast import export as export_cli
from kpfast import predict as predict_cli
from kpfast import train as train_cli
from kpfast.cli import run_cli
from kpfast.engine.checkpointer import load_checkpoint

# The engine tests' tiny-run fixtures (tests/ is on sys.path: it has no __init__.py).
from engine.conftest import synthetic_root, tiny_overrides  # noqa: F401

# Needs the data/eval extras (absent on the GPU machine): skip, do not fail, without them.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]


def _set_args(overrides):
    args = []
    for item in overrides:
        args += ["--set", item]
    return args


def _run_module(module, *args):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PACKAGE_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_unknown_key_fails_with_suggestion_and_exit_code_2():
    proc = _run_module("kpfast.train", "--set", "train.epoch=3")
    assert proc.returncode == 2
    assert "unknown config key 'train.epoch'" in proc.stderr and "did you mean 'epochs'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wrong_type_and_range_fail_naming_the_key(capsys):
    assert run_cli(train_cli.main, ["--set", "train.epochs=many"]) == 2
    assert "train.epochs: expected int, got str 'many'" in capsys.readouterr().err
    assert run_cli(train_cli.main, ["--learning_rate", "-1"]) == 2
    assert "optim.lr: must be > 0" in capsys.readouterr().err
    assert run_cli(train_cli.main, ["--config", "no_such_config"]) == 2
    assert "no such file and no shipped config" in capsys.readouterr().err


@pytest.fixture
def trained_run(tiny_overrides, tmp_path):
    """A one-epoch run through the train CLI (in-process)."""
    # Dedicated flags (--epochs, --seed) win over --set values of the same keys.
    sets = _set_args(tiny_overrides + ["train.run_name=cli", "train.seed=7"])
    code = run_cli(train_cli.main, ["--epochs", "1", "--seed", "3"] + sets)
    assert code == 0
    return tmp_path / "runs" / "cli"


def test_train_cli_writes_run_and_resolved_config(trained_run, capsys):
    import yaml

    resolved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert resolved["train"]["epochs"] == 1 and resolved["train"]["seed"] == 3
    assert load_checkpoint(trained_run / "last.pt")["epoch"] == 1


def test_second_run_with_the_same_name_is_refused_and_first_kept(trained_run, tiny_overrides, capsys):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    capsys.readouterr()
    code = run_cli(train_cli.main, ["--epochs", "1"] + _set_args(tiny_overrides + ["train.run_name=cli"]))
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--resume" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("override,key", [("model.overrides.base_width=16", "model.overrides"),
                                          ("optim.name=sgd", "optim.name")])
def test_resume_with_other_width_or_optimizer_names_the_keys(trained_run, capsys, override, key):
    before = (trained_run / "last.pt").read_bytes()
    capsys.readouterr()
    code = run_cli(train_cli.main, ["--resume", str(trained_run), "--set", override])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "cannot resume" in lines[0] and key in lines[0]
    assert (trained_run / "last.pt").read_bytes() == before


def test_eval_cli_reports_coco_ap_and_writes_results(trained_run, tmp_path, capsys):
    capsys.readouterr()
    out_json = tmp_path / "res.json"
    metrics_json = tmp_path / "metrics.json"
    code = run_cli(eval_cli.main, ["--checkpoint", str(trained_run / "best.pt"), "--results", str(out_json),
                                   "--metrics", str(metrics_json), "--set", "eval.flip_test=true"])
    assert code == 0
    text = capsys.readouterr().out
    assert "COCO keypoint AP" in text and "Average Precision" in text
    results = json.loads(out_json.read_text())
    metrics = json.loads(metrics_json.read_text())
    assert results and {"image_id", "keypoints", "score", "category_id"} <= set(results[0])
    assert len(results[0]["keypoints"]) == 17 * 3
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["num_instances"] == metrics["num_results"]


def test_predict_cli_writes_overlays_and_coco_json(trained_run, synthetic_root, tmp_path):
    images = sorted((synthetic_root / "images" / "val2017").glob("*.jpg"))[:2]
    boxes = {images[0].name: [[5, 5, 60, 90, 0.9], [30, 20, 50, 80]]}
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps(boxes))
    out = tmp_path / "pred"
    code = run_cli(predict_cli.main, ["--checkpoint", str(trained_run / "last.pt"), *map(str, images),
                                      "--boxes", str(boxes_file), "--output-dir", str(out)])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert len(results) == 2 and all(r["file_name"] == images[0].name for r in results)
    assert (out / f"{images[0].stem}_pose.jpg").is_file() and (out / f"{images[1].stem}_pose.jpg").is_file()
    # Without --boxes every image is one whole-image instance.
    code = run_cli(predict_cli.main, ["--checkpoint", str(trained_run / "last.pt"), *map(str, images),
                                      "--output-dir", str(out / "whole")])
    assert code == 0
    whole = json.loads((out / "whole" / "results.json").read_text())
    assert len(whole) == 2 and whole[0]["bbox"][:2] == [0.0, 0.0]


def test_predict_cli_counts_unreadable_images(trained_run, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    code = run_cli(predict_cli.main, ["--checkpoint", str(trained_run / "last.pt"), str(bad),
                                      "--output-dir", str(tmp_path / "p")])
    captured = capsys.readouterr()
    assert code == 1 and "skipped unreadable image" in captured.err
    assert json.loads((tmp_path / "p" / "results.json").read_text()) == []


def test_export_onnx_matches_pytorch(trained_run, tmp_path):
    import numpy as np
    onnx = pytest.importorskip("onnx")
    import torch
    from onnx.reference import ReferenceEvaluator

    from kpfast.engine.checkpointer import model_from_checkpoint
    from kpfast.engine.config import config_from_dict

    target = tmp_path / "model.onnx"
    assert run_cli(export_cli.main, ["--checkpoint", str(trained_run / "last.pt"), "--output", str(target)]) == 0
    model = onnx.load(str(target))
    assert [i.name for i in model.graph.input] == ["images"]
    assert [o.name for o in model.graph.output] == ["heatmaps"]
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    # The ONNX graph computes what the PyTorch model computes (batch of 2: the batch axis is dynamic).
    state = load_checkpoint(trained_run / "last.pt")
    net = model_from_checkpoint(state, config_from_dict(state["config"])).eval()
    images = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(images)["heatmaps"].numpy()
    (got,) = ReferenceEvaluator(model).run(None, {"images": images.numpy()})
    assert got.shape == (2, 17, 16, 12)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)
