"""Resume never rewinds or overwrites a run: only the run's own newest checkpoint continues in its
own folder; any other checkpoint (best.pt or a top-k file behind last.pt, a last.pt copied into
another folder) starts a new run from its state and leaves every existing file as it was
(docs/files.md)."""

import csv
import shutil
import subprocess
import sys

import pytest

from kpfast.engine.checkpointer import load_checkpoint
from kpfast.engine.config import load_config
from kpfast.engine.trainer import Trainer
from .test_trainer_faults import overrides, synthetic_root  # noqa: F401 - shared fixtures


def _trainer(overrides, *extra, resume=None, aps=None):
    trainer = Trainer(load_config(None, list(overrides) + list(extra)), resume=resume, log=lambda s: None)
    if aps is not None:
        values = iter(aps)
        trainer.evaluate = lambda: {"AP": next(values), "AP50": 0.0, "AP75": 0.0, "AR": 0.0}
    return trainer


def _run(overrides, epochs_done, aps):
    """A run named 'run' stopped after ``epochs_done`` epochs with the given validation APs."""
    trainer = _trainer(overrides, "train.run_name=run", aps=aps)
    trainer.config.train.max_steps = trainer.steps_per_epoch * epochs_done
    result = trainer.train()
    assert result.interrupted and result.epochs_completed == epochs_done
    return result.run_dir


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _epochs(run_dir):
    return [int(r["epoch"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))]


@pytest.mark.parametrize("source", ["best.pt", "topk/epoch0001_ap0.5000.pt"])
def test_resume_from_an_older_checkpoint_starts_a_new_run_and_changes_nothing(overrides, source):
    run = _run(overrides, 2, [0.5, 0.3])  # best and a top-k file at epoch 1, last.pt at epoch 2
    before = _snapshot(run)
    assert "topk/epoch0002_ap0.3000.pt" in before and _epochs(run) == [1, 2]
    resumed = _trainer(overrides, resume=run / source, aps=[0.1, 0.2])
    assert resumed.run_dir != run and resumed.run_dir.parent == run.parent
    assert resumed.state.epoch == 1 and [row["epoch"] for row in resumed.state.history] == [1]
    resumed.train()
    assert _snapshot(run) == before, "the resumed-from run was changed"
    assert _epochs(resumed.run_dir) == [1, 2, 3]
    # The new run owns its top-k list: files of the old run are neither listed nor deleted.
    assert all((resumed.run_dir / "topk" / e["file"]).is_file()
               for e in load_checkpoint(resumed.run_dir / "last.pt")["topk"])


def test_best_and_topk_payloads_hold_their_own_epochs_row(overrides):
    run = _run(overrides, 1, [0.5])
    for name in ("best.pt", "topk/epoch0001_ap0.5000.pt"):
        saved = load_checkpoint(run / name)
        assert saved["epoch"] == 1 and [row["epoch"] for row in saved["history"]] == [1], name


def test_resume_from_best_when_the_first_last_pt_never_landed_continues_the_run(overrides):
    run = _run(overrides, 1, [0.5])
    (run / "last.pt").unlink()  # a kill during the first last.pt write
    resumed = _trainer(overrides, resume=run / "best.pt", aps=[0.6, 0.7])
    assert resumed.run_dir == run and resumed.state.epoch == 1
    assert _epochs(run) == [1]
    resumed.train()
    assert _epochs(run) == [1, 2, 3]


def test_last_pt_copied_into_another_folder_starts_a_new_run_and_keeps_that_folders_files(overrides, tmp_path):
    run = _run(overrides, 1, [0.5])
    mine = tmp_path / "mine"
    mine.mkdir()
    shutil.copy(run / "last.pt", mine / "last.pt")
    (mine / "config.yaml").write_text("my notes\n")
    (mine / "metrics.csv").write_text("my,own\n1,2\n")
    before = _snapshot(mine)
    resumed = _trainer(overrides, resume=mine / "last.pt", aps=[0.6, 0.7])
    assert resumed.run_dir != mine and resumed.run_dir.parent == tmp_path / "runs"
    resumed.train()
    assert _snapshot(mine) == before


def test_resume_of_the_runs_own_last_pt_continues_in_place(overrides):
    run = _run(overrides, 1, [0.5])
    resumed = _trainer(overrides, resume=run / "last.pt", aps=[0.6, 0.7])
    assert resumed.run_dir == run
    resumed.train()
    assert _epochs(run) == [1, 2, 3]


def test_cli_resume_from_best_reports_the_new_run(overrides, tmp_path):
    run = _run(overrides, 2, [0.5, 0.3])
    before = _snapshot(run)
    args = [sys.executable, "-m", "kpfast.train", "--resume", str(run / "best.pt"), "--set", "train.epochs=2"]
    for item in overrides:
        if not item.startswith(("model.", "data.input_size", "train.top_k")):
            args += ["--set", item]
    done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "new run" in done.stdout
    assert _snapshot(run) == before
