"""A tiny 2-process DDP run on CPU (gloo) through torchrun."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import kpfast
from kpfast.engine.checkpointer import load_checkpoint

# Needs the data/eval extras (absent on the GPU machine): skip, do not fail, without them.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]


def test_two_process_gloo_run_trains_evaluates_and_checkpoints(tiny_overrides, tmp_path):
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "kpfast.train", "--device", "cpu"]
    for item in tiny_overrides + ["train.run_name=ddp", "train.batch_size=4", "train.epochs=1"]:
        args += ["--set", item]
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(args, cwd=PACKAGE_ROOT, env=env, capture_output=True, text=True, timeout=300)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert "world size 2" in text
    # Logging happens on rank 0 only: one final report, not two.
    assert text.count("final COCO keypoint AP") == 1, text
    state = load_checkpoint(tmp_path / "runs" / "ddp" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # Each rank trained on half of the (padded) epoch.
    train_instances = len(state["history"]) and state["global_step"]
    assert train_instances >= 1
    # Evaluation gathered every validation instance from both ranks.
    val_rows = [r for r in state["history"] if "val_num_instances" in r]
    assert val_rows and val_rows[-1]["val_num_instances"] == val_rows[-1]["val_num_results"] > 0
