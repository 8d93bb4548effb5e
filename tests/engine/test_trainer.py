"""Trainer behaviour on tiny CPU runs: a few steps, exact resume, NaN handling, signals."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from kpfast.engine.checkpointer import load_checkpoint
from kpfast.engine.config import load_config
from kpfast.engine.trainer import Trainer, TrainingDiverged

import kpfast

# Needs the data/eval extras (absent on the GPU machine): skip, do not fail, without them.
pytest.importorskip("pycocotools")
pytest.importorskip("albumentations")

# The directory holding the kpfast package under test (subprocesses must import the same one).
PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]


def _trainer(overrides, *extra, resume=None, log=None):
    return Trainer(load_config(None, list(overrides) + list(extra)), resume=resume, log=log or (lambda s: None))


def test_default_config_runs_a_few_steps(tiny_overrides):
    trainer = _trainer(tiny_overrides, "train.run_name=few", "train.epochs=1")
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.train()
    run = result.run_dir
    assert not result.interrupted and result.epochs_completed == 1
    assert result.global_step == trainer.steps_per_epoch > 0
    for name in ("config.yaml", "metrics.csv", "last.pt", "best.pt", "results.png"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())
    state = load_checkpoint(run / "last.pt")  # weights_only=True
    changed = [k for k, v in state["model"].items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert changed, "training did not change any weight"
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and len(rows) == 2
    assert math.isfinite(float(dict(zip(rows[0].split(","), rows[1].split(",")))["train_loss"]))
    metrics = result.final_metrics
    assert 0.0 <= metrics["AP"] <= 1.0 and metrics["num_instances"] == len(trainer.data.val)


def _assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("stop_after,workers", [(3, 0), (4, 2)], ids=["epoch-boundary", "mid-epoch-workers"])
def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_overrides, stop_after, workers):
    common = list(tiny_overrides) + ["train.epochs=3", f"data.num_workers={workers}", "train.ema=true", "train.top_k=2",
                                     "optim.grad_clip=1.0", "schedule.name=cosine_restarts", "schedule.cycle_epochs=1"]
    full = _trainer(common, "train.run_name=full")
    assert full.steps_per_epoch == 1 or full.steps_per_epoch >= 1
    full_result = full.train()

    part = _trainer(common, "train.run_name=part", f"train.max_steps={stop_after}")
    first = part.train()
    assert first.interrupted and first.global_step == stop_after
    last = part.run_dir / "last.pt"
    saved = load_checkpoint(last)
    assert saved["global_step"] == stop_after
    resumed = _trainer(common, resume=last)
    assert resumed.global_step == stop_after
    second = resumed.train()
    assert not second.interrupted and second.global_step == full_result.global_step

    _assert_same_state(full.model.state_dict(), resumed.model.state_dict())
    _assert_same_state(full.ema.module.state_dict(), resumed.ema.module.state_dict())
    opt_a, opt_b = full.optimizer.state_dict(), resumed.optimizer.state_dict()
    for pid, st in opt_a["state"].items():
        for name, value in st.items():
            assert torch.equal(value, opt_b["state"][pid][name]), (pid, name)
    assert full.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    assert full_result.best_ap == second.best_ap
    # The resumed run continued in the same run directory and kept its history.
    assert resumed.run_dir == part.run_dir
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]


def test_nonfinite_losses_are_skipped_then_stop_the_run(tiny_overrides):
    trainer = _trainer(tiny_overrides, "train.run_name=nan", "train.max_consecutive_nonfinite=3", "train.epochs=5")
    real = trainer.step.objective
    calls = {"n": 0, "forwards": 0}
    weights_after_first = {}

    def snapshot_before_second_step(module, args):
        calls["forwards"] += 1
        if calls["forwards"] == 2:  # the first step has completed: remember the model it left
            weights_after_first.update({k: v.clone() for k, v in module.state_dict().items()})

    trainer.model.register_forward_pre_hook(snapshot_before_second_step)

    def sometimes_nan(outputs, batch):
        calls["n"] += 1
        loss, parts = real(outputs, batch)
        return (loss * float("nan"), parts) if calls["n"] >= 2 else (loss, parts)

    trainer.step.objective = sometimes_nan
    with pytest.raises(TrainingDiverged, match=r"3 consecutive steps with a non-finite loss"):
        trainer.train()
    assert trainer.nonfinite_total == 3
    # Skipped steps never touched the weights nor the BatchNorm statistics.
    _assert_same_state(weights_after_first, trainer.model.state_dict())


def test_early_stopping_stops_when_ap_does_not_improve(tiny_overrides, monkeypatch):
    trainer = _trainer(tiny_overrides, "train.run_name=early", "train.epochs=10", "train.early_stopping_patience=2")
    monkeypatch.setattr(trainer, "evaluate", lambda: {"AP": 0.5, "AP50": 0.5, "AP75": 0.5, "AR": 0.5})
    result = trainer.train()
    # Epoch 1 sets the best; epochs 2 and 3 do not improve -> stop after epoch 3.
    assert result.stopped_early and result.epochs_completed == 3
    assert load_checkpoint(result.run_dir / "last.pt")["stopped_early"] is True


def test_sigterm_saves_last_checkpoint_and_exits_cleanly(tiny_overrides, tmp_path):
    args = [sys.executable, "-m", "kpfast.train"]
    for item in tiny_overrides + ["train.epochs=200", "train.run_name=sig"]:
        args += ["--set", item]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(PACKAGE_ROOT))
    proc = subprocess.Popen(args, cwd=PACKAGE_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)
    lines = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if " step " in line:  # training steps are running
                proc.send_signal(signal.SIGTERM)
                break
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(lines) + out
    assert proc.returncode == 128 + signal.SIGTERM, text
    assert "Traceback" not in text
    last = tmp_path / "runs" / "sig" / "last.pt"
    state = load_checkpoint(last)
    assert state["global_step"] >= 1 and state["epoch"] < 200
    assert "resume with" in text


def test_resume_rejects_missing_checkpoint(tiny_overrides, tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume"):
        _trainer(tiny_overrides, resume=tmp_path / "nothing.pt")


def test_options_bf16_ema_checkpointing_channels_last_visibility_and_coordinate_loss(tiny_overrides):
    trainer = _trainer(tiny_overrides, "train.run_name=opts", "train.epochs=1", "train.max_steps=2",
                       "train.precision=bf16", "train.ema=true", "model.gradient_checkpointing=true",
                       "model.channels_last=true", "model.visibility_head=true", "loss.visibility_weight=1.0",
                       "loss.coordinate_weight=0.5", "loss.kind=focal", "optim.grad_clip=1.0")
    assert trainer.model.gradient_checkpointing
    losses = []
    original = trainer.step.objective

    def record(outputs, batch):
        loss, parts = original(outputs, batch)
        losses.append({k: float(v.detach()) for k, v in parts.items()})
        return loss, parts

    trainer.step.objective = record
    result = trainer.train()
    assert result.interrupted and result.global_step == 2
    assert set(losses[0]) == {"heatmap", "visibility", "coordinate"}
    assert all(math.isfinite(v) for row in losses for v in row.values())
    assert trainer.ema.updates == 2
    state = load_checkpoint(result.run_dir / "last.pt")
    assert state["ema"]["updates"] == 2


def test_visibility_weight_without_head_is_a_clear_error(tiny_overrides):
    trainer = _trainer(tiny_overrides, "train.run_name=nohead", "loss.visibility_weight=1.0", "train.max_steps=1")
    with pytest.raises(ValueError, match="visibility head"):
        trainer.train()
