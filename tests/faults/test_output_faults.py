"""Every command that writes checks its outputs with one rule (kpfast.outputs,
docs/files.md): never an input, the checkpoint or an annotation file, never a file of a run, never
an existing file predict did not get --overwrite for. Refusals are one line and write nothing."""

import json

import cv2
import numpy as np
import pytest

from kpfast import eval as eval_cli
from kpfast import export as export_cli
from kpfast import predict as predict_cli
from kpfast.data import synthetic
from kpfast.cli import run_cli
from kpfast.outputs import OutputGuard, OutputPathError
from kpfast.engine.rundir import create_run_dir
from .helpers import one_line_error
from .test_cli_faults import _tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from kpfast.data import ensure_synthetic_dataset

    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "ds", num_train=4, num_val=2, seed=0)


def _image(path, value):
    cv2.imwrite(str(path), np.full((40, 30, 3), value, np.uint8))
    return path.read_bytes()


def test_predict_never_writes_over_an_input_image(checkpoint, tmp_path, capsys):
    a, b = tmp_path / "a.jpg", tmp_path / "a_pose.jpg"
    before = {a: _image(a, 10), b: _image(b, 200)}
    argv = ["--checkpoint", str(checkpoint), str(a), str(b), "--output-dir", str(tmp_path), "--device", "cpu"]
    assert run_cli(predict_cli.main, argv) == 2
    one_line_error(capsys, "a_pose.jpg", "input image", "--output-dir")
    assert {p: p.read_bytes() for p in before} == before
    assert not (tmp_path / "results.json").exists()


def test_a_second_predict_into_the_same_folder_needs_overwrite(checkpoint, tmp_path, capsys):
    image = tmp_path / "in" / "x.jpg"
    image.parent.mkdir()
    _image(image, 90)
    out = tmp_path / "out"
    argv = ["--checkpoint", str(checkpoint), str(image), "--output-dir", str(out), "--device", "cpu"]
    assert run_cli(predict_cli.main, argv) == 0
    capsys.readouterr()
    first = (out / "results.json").read_bytes()
    (out / "results.json").write_text("[]")  # e.g. the user's edits to the first results
    assert run_cli(predict_cli.main, argv) == 2
    one_line_error(capsys, "already exists", "--overwrite")
    assert (out / "results.json").read_text() == "[]"
    assert run_cli(predict_cli.main, argv + ["--overwrite"]) == 0
    assert (out / "results.json").read_bytes() == first


@pytest.mark.parametrize("flag", ["--results", "--metrics"])
def test_eval_never_replaces_its_checkpoint(checkpoint, tmp_path, flag, capsys):
    ck = tmp_path / "ck.pt"
    ck.write_bytes(checkpoint.read_bytes())
    assert run_cli(eval_cli.main, ["--checkpoint", str(ck), flag, str(tmp_path / "." / "ck.pt")]) == 2
    one_line_error(capsys, flag, "is the checkpoint")
    assert ck.read_bytes() == checkpoint.read_bytes()


@pytest.mark.parametrize("flag", ["--results", "--metrics"])
def test_eval_never_replaces_the_annotation_file(checkpoint, synthetic_root, tmp_path, flag, capsys):
    ann = synthetic_root / "annotations" / "person_keypoints_val2017.json"
    before = ann.read_bytes()
    argv = ["--checkpoint", str(checkpoint), "--set", "data.dataset=synthetic", "--data_root", str(synthetic_root),
            "--set", "data.synthetic_num_train=4", "--set", "data.synthetic_num_val=2", "--device", "cpu",
            "--workers", "0", flag, str(ann)]
    assert run_cli(eval_cli.main, argv) == 2
    one_line_error(capsys, flag, "annotation file")
    assert ann.read_bytes() == before


def test_eval_results_and_metrics_cannot_be_one_file(checkpoint, tmp_path, capsys):
    out = str(tmp_path / "same.json")
    assert run_cli(eval_cli.main, ["--checkpoint", str(checkpoint), "--results", out, "--metrics", out]) == 2
    one_line_error(capsys, "--metrics", "also --results")


def test_outputs_never_replace_a_file_of_a_run(tmp_path):
    run = create_run_dir(tmp_path, "exp")
    guard = OutputGuard()
    for name in ("last.pt", "metrics.csv", "config.yaml", "topk/epoch0001_ap0.1000.pt", "tensorboard/x"):
        with pytest.raises(OutputPathError, match="file of the training run"):
            guard.check(run / name, "--output")
    assert guard.check(run / "best.onnx", "--output") == run / "best.onnx"  # a new file of the user's


def test_export_default_output_next_to_a_run_checkpoint_is_allowed(tmp_path):
    run = create_run_dir(tmp_path, "exp")
    assert export_cli.resolve_output(run / "best.pt", None) == run / "best.onnx"
    with pytest.raises(OutputPathError, match="file of the training run"):
        export_cli.resolve_output(run / "best.pt", run / "metrics.csv")


def test_synthetic_cli_never_writes_into_an_existing_coco_root(tmp_path, capsys):
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "images" / "train2017").mkdir(parents=True)
    ann = root / "annotations" / "person_keypoints_train2017.json"
    ann.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    image = root / "images" / "train2017" / "000000000001.jpg"
    before = {ann: ann.read_bytes(), image: _image(image, 33)}
    assert run_cli(synthetic.main, [str(root), "--images", "2", "--val-images", "1"]) == 2
    one_line_error(capsys, str(root), "never deletes")
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in root.iterdir()) == ["annotations", "images"]


def test_synthetic_cli_writes_a_new_root(tmp_path, capsys):
    root = tmp_path / "new"
    assert run_cli(synthetic.main, [str(root), "--images", "2", "--val-images", "1"]) == 0
    assert (root / "annotations" / "person_keypoints_train2017.json").is_file()
    assert len(list((root / "images" / "train2017").iterdir())) == 2
