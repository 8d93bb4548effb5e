"""One evaluation path: ``python -m kpfast.eval`` on a checkpoint reports exactly the metrics the
trainer logged for it (docs/engine.md: both run the Evaluator, the Predictor and load_coco_gt)."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import kpfast
from kpfast import train as train_cli
from kpfast.engine.checkpointer import load_checkpoint
from kpfast.cli import run_cli

# The engine tests' tiny-run fixtures (tests/ is on sys.path: it has no __init__.py).
from engine.conftest import synthetic_root, tiny_overrides  # noqa: F401

pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]
LOGGED = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl", "num_instances", "num_results",
          "PCK", "EPE")


@pytest.mark.slow
def test_eval_cli_gives_exactly_the_metrics_the_trainer_logged(tiny_overrides, tmp_path):
    # The flip test on (the trainer's evaluation and kpfast.eval read eval.flip_test from the same
    # stored config), so the whole Predictor is on the path being compared.
    sets = []
    for item in tiny_overrides + ["train.run_name=one_path", "eval.flip_test=true"]:
        sets += ["--set", item]
    assert run_cli(train_cli.main, sets) == 0
    run = tmp_path / "runs" / "one_path"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    epoch = load_checkpoint(run / "last.pt")["epoch"]
    logged = next(row for row in rows if int(row["epoch"]) == epoch)

    metrics_file = tmp_path / "eval_metrics.json"
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    proc = subprocess.run([sys.executable, "-m", "kpfast.eval", "--checkpoint", str(run / "last.pt"),
                           "--metrics", str(metrics_file)], cwd=PACKAGE_ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    measured = json.loads(metrics_file.read_text())

    # metrics.csv holds repr(float), which reads back to the same float: equality is exact.
    for name in LOGGED:
        assert float(logged[f"val_{name}"]) == float(measured[name]), name
    # The comparison is not vacuous: EPE is a real distance that any change of the pipeline moves.
    assert math.isfinite(measured["EPE"]) and measured["EPE"] > 0 and measured["num_instances"] > 0
