"""Fault probes of the export and predict CLIs (what they write, refuse and report: docs/files.md),
kept as regressions.

Each probe runs the entry point the way a user does (``run_cli(main, argv)`` or a subprocess) on a
tiny, untrained checkpoint: what matters here is what is written, refused and reported, not AP.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import kpfast
from kpfast import export as export_cli
from kpfast import predict as predict_cli
from kpfast.cli import run_cli

PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]
TINY_MODEL = {"base_width": 8, "num_branches": 2, "num_modules": [1, 1, 1], "stem_channels": 8}


def _tiny_checkpoint(path: Path) -> Path:
    from kpfast.data import DatasetInfo
    from kpfast.engine.checkpointer import save_checkpoint
    from kpfast.engine.config import config_from_dict, config_to_dict, load_config

    data = config_to_dict(load_config(None))
    data["model"]["overrides"] = dict(TINY_MODEL)
    data["data"]["input_size"] = [64, 48]
    config = config_from_dict(data)
    torch.manual_seed(0)
    model = config.model.build()
    info = DatasetInfo.coco()
    save_checkpoint({"config": config_to_dict(config), "model": model.state_dict(),
                     "dataset_info": {"keypoint_names": list(info.keypoint_names),
                                      "flip_pairs": [list(p) for p in info.flip_pairs],
                                      "skeleton": [list(p) for p in info.skeleton],
                                      "sigmas": [float(s) for s in info.sigmas]}}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return _tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _run_module(module, *args):
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    return subprocess.run([sys.executable, "-m", module, *args], cwd=PACKAGE_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


# ------------------------------------------------------------------ export

@pytest.mark.parametrize("how", ["same_path", "dotdot_path", "symlink", "onnx_named_checkpoint"])
def test_export_refuses_to_overwrite_the_checkpoint(checkpoint, tmp_path, how, capsys):
    ck = tmp_path / ("model.onnx" if how == "onnx_named_checkpoint" else "ck.pt")
    ck.write_bytes(checkpoint.read_bytes())
    argv = ["--checkpoint", str(ck)]
    if how == "same_path":
        argv += ["--output", str(ck)]
    elif how == "dotdot_path":
        (tmp_path / "sub").mkdir()
        argv += ["--output", str(tmp_path / "sub" / ".." / ck.name)]
    elif how == "symlink":
        (tmp_path / "link.onnx").symlink_to(ck)
        argv += ["--output", str(tmp_path / "link.onnx")]
    before = ck.read_bytes()
    assert run_cli(export_cli.main, argv) == 2
    err = capsys.readouterr().err
    assert "is the checkpoint" in err and "--output" in err and len(err.strip().splitlines()) == 1
    assert ck.read_bytes() == before


def test_export_to_a_directory_is_one_line(checkpoint, tmp_path, capsys):
    assert run_cli(export_cli.main, ["--checkpoint", str(checkpoint), "--output", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and str(tmp_path) in err and len(err.strip().splitlines()) == 1


def test_export_without_onnx_says_pip_install_onnx(checkpoint, tmp_path):
    # A subprocess whose import system finds no onnx (as on an install without the test extra).
    code = ("import sys; sys.modules['onnx'] = None\n"
            "import importlib.util\n"
            "real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name == 'onnx' else real(name, *a)\n"
            "from kpfast.export import main\nfrom kpfast.cli import run_cli\n"
            f"sys.exit(run_cli(main, ['--checkpoint', {str(checkpoint)!r}, '--output', "
            f"{str(tmp_path / 'm.onnx')!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE_ROOT, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT)))
    assert proc.returncode != 0
    assert "pip install onnx" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_export_writes_atomically_next_to_the_checkpoint(checkpoint, tmp_path):
    pytest.importorskip("onnx")
    ck = tmp_path / "ck.pt"
    ck.write_bytes(checkpoint.read_bytes())
    assert run_cli(export_cli.main, ["--checkpoint", str(ck)]) == 0
    assert (tmp_path / "ck.onnx").stat().st_size > 1000
    assert ck.read_bytes() == checkpoint.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.onnx", "ck.pt"]  # no temporary left


# ------------------------------------------------------------------ predict

@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two different images with the same file stem, in two folders."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for folder in ("a", "b"):
        (root / folder).mkdir()
        path = root / folder / "img.jpg"
        cv2.imwrite(str(path), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def _strict_json(path: Path):
    def refuse(token):
        raise AssertionError(f"non-strict JSON constant {token} in {path}")

    return json.loads(path.read_text(), parse_constant=refuse)


BAD_BOXES = [[10, 10, 0, 50], [10, 10, -20, 50], [float("nan"), 10, 30, 40], [10, 10, float("inf"), 40],
             [1e30, 1e30, 1e30, 1e30], [0, 0, 1e30, 1e30], [500, 500, 20, 20], [-80, -80, 20, 20]]


def test_predict_skips_invalid_boxes_counts_them_and_writes_strict_json(checkpoint, images, tmp_path, capsys):
    """Zero/negative/NaN/huge/outside boxes never give NaN output nor crash OpenCV."""
    good = [20, 15, 60, 90, 0.9]
    boxes = tmp_path / "boxes.json"
    # Python's json writes NaN/Infinity (as a detector's careless dump would); the loader reads them.
    boxes.write_text(json.dumps({images[0].name: [good] + [b + [0.8] for b in BAD_BOXES]}))
    out = tmp_path / "out"
    code = run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), str(images[0]), "--boxes", str(boxes),
                                      "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    results = _strict_json(out / "results.json")
    assert len(results) == 1 and results[0]["bbox"] == good[:4]
    assert all(math.isfinite(v) for v in results[0]["keypoints"]) and math.isfinite(results[0]["score"])
    assert f"{len(BAD_BOXES)} invalid box(es) skipped" in captured.out
    err = captured.err
    assert err.count("skipped box") == len(BAD_BOXES)
    for reason in ("non-positive size", "non-finite coordinates", "more than 10x", "outside the 160x120 image"):
        assert reason in err


def test_predict_coco_boxes_with_nan_score_are_skipped(checkpoint, images, tmp_path, capsys):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"image_id": 0, "bbox": [20, 15, 60, 90], "score": float("nan")},
                                 {"image_id": 0, "bbox": [20, 15, 60, 90], "score": 0.7}]))
    code = run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), str(images[0]), "--boxes", str(boxes),
                                      "--output-dir", str(tmp_path / "o")])
    assert code == 0
    assert len(_strict_json(tmp_path / "o" / "results.json")) == 1
    assert "non-finite score" in capsys.readouterr().err


@pytest.mark.parametrize("entry,message", [
    ({"image_id": 0, "bbox": [1, 2, 3]}, "entry #0 needs an integer image_id, a bbox of 4 numbers"),
    ({"image_id": 0, "bbox": ["a", 2, 3, 4]}, "entry #0 needs an integer image_id"),
    ({"bbox": [1, 2, 3, 4]}, "entry #0 needs 'image_id' and 'bbox'"),
])
def test_predict_malformed_boxes_file_is_one_line(checkpoint, images, tmp_path, capsys, entry, message):
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([entry]))
    code = run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), str(images[0]), "--boxes", str(boxes),
                                      "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and str(boxes) in err and len(err.strip().splitlines()) == 1


def test_predict_output_dir_that_is_a_file_is_one_line(checkpoint, images, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("keep")
    code = run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), str(images[0]), "--output-dir", str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "is a file" in err and str(target) in err and len(err.strip().splitlines()) == 1
    assert target.read_text() == "keep"


def test_predict_overlays_of_images_with_the_same_stem_do_not_overwrite(checkpoint, images, tmp_path):
    """a/img.jpg and b/img.jpg get one overlay each: neither overwrites the other's."""
    out = tmp_path / "o"
    assert run_cli(predict_cli.main, ["--checkpoint", str(checkpoint), *map(str, images),
                                      "--output-dir", str(out)]) == 0
    overlays = sorted(p.name for p in out.glob("*_pose.jpg"))
    assert overlays == ["img_0_pose.jpg", "img_1_pose.jpg"]
    first, second = (cv2.imread(str(out / name)) for name in overlays)
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 10  # two different images
    # An image literally named like a disambiguated overlay does not collide either.
    assert predict_cli.overlay_names([Path("x/a.jpg"), Path("a_2.jpg"), Path("y/a.jpg")]) == \
        ["a_0_pose.jpg", "a_2_pose.jpg", "a_5_pose.jpg"]
