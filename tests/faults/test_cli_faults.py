"""Fault probes of the export and predict CLIs (issue 15 items 4, 7, 10, 11), kept as regressions.

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
from kpfast.engine.cli import run_cli

PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]
TINY_MODEL = {"base_width": 8, "num_branches": 2, "num_modules": [1, 1, 1], "stem_channels": 8}


def _tiny_checkpoint(path: Path) -> Path:
    from kpfast.data import DatasetInfo
    from kpfast.engine.checkpoint import save_checkpoint
    from kpfast.engine.config import config_from_dict, config_to_dict, load_config
    from kpfast.engine.builders import build_model

    data = config_to_dict(load_config(None))
    data["model"]["overrides"] = dict(TINY_MODEL)
    data["data"]["input_size"] = [64, 48]
    config = config_from_dict(data)
    torch.manual_seed(0)
    model = build_model(config.model)
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


# ------------------------------------------------------------------ export (items 4, 10)

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
            "from kpfast.export import main\nfrom kpfast.engine.cli import run_cli\n"
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
