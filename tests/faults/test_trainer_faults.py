"""Trainer under hostile checkpoints and crashes: resume deletes only the trainer's own files and
continues exactly where last.pt left off (docs/engine.md, docs/files.md)."""

import csv

import pytest

from kpfast.engine.checkpointer import load_checkpoint, save_checkpoint
from kpfast.engine.config import load_config
from kpfast.engine.trainer import Trainer


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    from kpfast.data import ensure_synthetic_dataset

    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "ds", num_train=24, num_val=4, seed=0)


@pytest.fixture
def overrides(synthetic_root, tmp_path):
    return [
        "data.dataset=synthetic", f"data.root={synthetic_root}", "data.synthetic_num_train=24",
        "data.synthetic_num_val=4", "data.input_size=[64, 48]", "data.num_workers=0",
        "model.overrides={base_width: 8, num_branches: 2, num_modules: [1, 1, 1], stem_channels: 8}",
        "train.batch_size=16", "train.epochs=3", "train.eval_interval=1", "train.visualize_samples=0",
        "train.log_interval=1",
        f"train.output_dir={tmp_path / 'runs'}", "eval.flip_test=false", "train.top_k=2",
    ]


def _trainer(overrides, *extra, resume=None):
    return Trainer(load_config(None, list(overrides) + list(extra)), resume=resume, log=lambda s: None)


def _one_epoch_run(overrides):
    """A run stopped after its first epoch: last.pt, best.pt, one top-k file."""
    trainer = _trainer(overrides, "train.run_name=run")
    trainer.config.train.max_steps = trainer.steps_per_epoch
    result = trainer.train()
    assert result.interrupted and result.epochs_completed == 1
    return result.run_dir


@pytest.mark.parametrize("hostile", ["ABSOLUTE", "../../victim.txt", "topk/../../victim.txt", "victim.txt",
                                     "epoch0001_ap0.5000.pt"],
                         ids=["absolute", "dotdot", "subdir", "other-name", "name-not-matching-entry"])
def test_resume_refuses_hostile_topk_file_names_and_deletes_nothing(overrides, tmp_path, hostile):
    run = _one_epoch_run(overrides)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (run / "victim.txt").write_text("precious too")
    state = load_checkpoint(run / "last.pt")
    name = str(victim) if hostile == "ABSOLUTE" else hostile
    # A checkpoint whose top-k list is full of an entry that the next evaluation pushes out.
    state["topk"] = [{"metric": 0.7, "epoch": 1, "file": name}, {"metric": 0.0, "epoch": 1, "file": name}]
    save_checkpoint(state, run / "last.pt")
    with pytest.raises(ValueError, match="top-k entry .* refusing"):
        _trainer(overrides, resume=run / "last.pt")
    assert victim.read_text() == "precious" and (run / "victim.txt").read_text() == "precious too"


def test_topk_keeps_only_its_own_files_and_deletes_what_drops_out(overrides):
    trainer = _trainer(overrides, "train.run_name=topk", "train.epochs=3", "train.top_k=1")
    aps = iter([0.3, 0.5, 0.4])
    trainer.evaluate = lambda: {"AP": next(aps), "AP50": 0.0, "AP75": 0.0, "AR": 0.0}
    result = trainer.train()
    files = sorted(p.name for p in (result.run_dir / "topk").iterdir())
    assert files == ["epoch0002_ap0.5000.pt"]
    assert load_checkpoint(result.run_dir / "last.pt")["topk"] == [
        {"metric": 0.5, "epoch": 2, "file": "epoch0002_ap0.5000.pt"}]


def test_resume_removes_stale_temp_files_of_our_own_writes_only(overrides):
    run = _one_epoch_run(overrides)
    ours = [run / ".last.pt.k2j3h4ab.tmp", run / ".best.pt.x_y9.tmp", run / ".metrics.csv.abc.tmp",
            run / "topk" / ".epoch0002_ap0.5000.pt.q1w2e3.tmp"]
    theirs = [run / ".notes.txt.abc.tmp", run / "last.pt.tmp", run / "data.tmp", run.parent / ".last.pt.abc.tmp"]
    for path in ours + theirs:
        path.write_bytes(b"partial")
    _trainer(overrides, resume=run / "last.pt")
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in theirs)


def test_resume_drops_metrics_rows_and_topk_files_written_after_last_pt(overrides):
    run = _one_epoch_run(overrides)
    kept = sorted(p.name for p in (run / "topk").iterdir())
    assert kept == ["epoch0001_ap" + kept[0].split("_ap")[1]]
    # A crash after epoch 2's top-k file and metrics row but before its last.pt.
    orphan = run / "topk" / "epoch0002_ap0.9000.pt"
    save_checkpoint({"x": 1}, orphan)
    with open(run / "metrics.csv", "a") as handle:
        handle.write("2,2,0.001,0.5,0\n")
    trainer = _trainer(overrides, resume=run / "last.pt")
    assert not orphan.exists()
    assert sorted(p.name for p in (run / "topk").iterdir()) == kept
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [1] and trainer.state.epoch == 1


def test_train_loss_of_a_resumed_epoch_averages_all_its_steps(overrides):
    common = list(overrides) + ["train.batch_size=4", "train.epochs=1", "train.log_interval=2"]
    full = _trainer(common, "train.run_name=full").train()
    part = _trainer(common, "train.run_name=part")
    assert part.steps_per_epoch >= 4
    part.config.train.max_steps = 3  # mid-epoch, between two loss readings (every 2 steps)
    first = part.train()
    assert first.interrupted and part.state.batch_in_epoch == 3
    resumed = _trainer(common, resume=first.run_dir / "last.pt")
    resumed.train()
    expected, got = _history(full.run_dir)[0], _history(first.run_dir)[0]
    # Summation order differs (readings at other steps), so equal up to float64 rounding.
    for key in ("train_loss", "train_heatmap"):
        assert float(got[key]) == pytest.approx(float(expected[key]), rel=1e-9), key


def _history(run_dir):
    return list(csv.DictReader(open(run_dir / "metrics.csv")))
