"""Corrupt, foreign and mismatched checkpoints give one line naming the file; a full disk
leaves the previous checkpoint intact and no temporary file behind."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from kpfast import eval as eval_cli
from kpfast import train as train_cli
from kpfast.engine.checkpointer import (
    CheckpointError,
    check_resume_compatible,
    load_checkpoint,
    load_training_checkpoint,
    save_checkpoint,
)
from kpfast.cli import run_cli
from kpfast.engine.config import config_from_dict, config_to_dict, load_config
from kpfast.outputs import atomic_write_bytes


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def _make(kind: str, path: Path) -> Path:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("epoch: 3\nthis is not a checkpoint\n")
    elif kind == "truncated":
        save_checkpoint({"config": {}, "model": {"w": torch.zeros(4096)}}, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bare_state_dict":
        torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    elif kind == "tensor":
        torch.save(torch.zeros(3), path)
    elif kind == "pickled_code":
        torch.save({"config": {}, "hook": shutil.rmtree}, path)  # refused by weights_only=True
    return path


KINDS = {
    "empty": "is empty",
    "text": "not a torch.save file",
    "truncated": "truncated",
    "bare_state_dict": "has no 'config' (a bare state_dict?)",
    "tensor": "holds a Tensor",
    "pickled_code": "weights_only=True",
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_bad_checkpoint_file_is_one_clear_error(tmp_path, kind):
    path = _make(kind, tmp_path / f"{kind}.pt")
    with pytest.raises(CheckpointError) as info:
        load_training_checkpoint(path)
    message = str(info.value)
    assert str(path) in message and KINDS[kind] in message and "\n" not in message


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "bare_state_dict"])
def test_resume_and_eval_of_a_bad_checkpoint_is_one_line(tmp_path, capsys, kind):
    path = _make(kind, tmp_path / "last.pt")
    assert run_cli(train_cli.main, ["--resume", str(path)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(path) in line and KINDS[kind] in line
    assert run_cli(eval_cli.main, ["--checkpoint", str(path)]) == 2
    assert str(path) in _one_line(capsys.readouterr().err)


def test_checkpoint_that_is_a_directory_or_missing(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    assert run_cli(eval_cli.main, ["--checkpoint", str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in _one_line(capsys.readouterr().err)


def _stored(overrides=()):
    return config_to_dict(load_config("default", list(overrides)))


def test_resume_compatibility_names_every_differing_key():
    stored = _stored()
    check_resume_compatible(stored, load_config("default", ["train.epochs=99", "eval.flip_test=false"]))
    with pytest.raises(CheckpointError) as info:
        check_resume_compatible(stored, load_config("default", [
            "model.overrides={base_width: 32, num_branches: 3, num_modules: [1, 1, 1], stem_channels: 16}",
            "optim.name=sgd",
        ]))
    message = str(info.value)
    assert "model.overrides" in message and "optim.name" in message and "'adamw'" in message
    assert "\n" not in message and "data.input_size" not in message


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["model.overrides={base_width: 32, num_branches: 3, num_modules: [1, 1, 1], stem_channels: 16}"],
         "model.overrides"),
        (["optim.name=sgd"], "optim.name"),
    ],
)
def test_resume_with_a_different_model_or_optimizer_is_one_line_before_loading(tmp_path, capsys, overrides, key):
    # A checkpoint whose states would not load into the requested model/optimizer: the CLI must
    # stop on the config comparison, before any state is touched (it holds no states at all).
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint({"config": _stored()}, run / "last.pt")
    args = ["--resume", str(run / "last.pt"), "--config", "default"]
    for item in overrides:
        args += ["--set", item]
    assert run_cli(train_cli.main, args) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: cannot resume") and key in line
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]


# --------------------------------------------------------------------------- tiny full disk


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs; skipped where this process may not mount one."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_full_disk_keeps_previous_checkpoint_and_leaves_no_temp_file(tiny_fs, capsys):
    last = tiny_fs / "last.pt"
    save_checkpoint({"config": {}, "w": torch.ones(1000)}, last)  # ~5 KB: fits
    before = last.read_bytes()
    big = {"config": {}, "w": torch.ones(64 * 1024)}  # 256 KB: does not fit in 64 KB

    with pytest.raises(OSError) as info:
        save_checkpoint(big, last)
    message = str(info.value)
    assert str(last) in message and "No space left" in message and "\n" not in message
    assert last.read_bytes() == before
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["last.pt"]
    assert load_checkpoint(last)["w"].sum() == 1000

    # Through the CLI wrapper: one line, exit code 2.
    assert run_cli(lambda argv: save_checkpoint(big, last), []) == 2
    line = _one_line(capsys.readouterr().err)
    assert str(last) in line and "free some space" in line
    assert last.read_bytes() == before and sorted(p.name for p in tiny_fs.iterdir()) == ["last.pt"]


def test_read_only_output_dir_is_one_line(tiny_fs, capsys):
    proc = subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
    assert run_cli(train_cli.main, ["--output_dir", str(tiny_fs / "runs")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "train.output_dir" in line and "not writable" in line
    with pytest.raises(OSError, match="cannot write"):
        atomic_write_bytes(tiny_fs / "x.bin", b"x")
    assert not any(tiny_fs.iterdir())


def test_low_level_load_accepts_any_mapping_but_training_load_needs_config(tmp_path):
    path = tmp_path / "plain.pt"
    save_checkpoint({"entries": [1, 2]}, path)
    assert load_checkpoint(path) == {"entries": [1, 2]}
    with pytest.raises(CheckpointError, match="has no 'config'"):
        load_training_checkpoint(path)
