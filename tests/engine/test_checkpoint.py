import os
import random

import numpy as np
import pytest
import torch

from kpfast.engine import checkpointer as ckpt


def test_save_load_round_trip_with_weights_only(tmp_path):
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 3, "rng": [ckpt.capture_rng_state()], "x": None}
    ckpt.save_checkpoint(state, tmp_path / "a.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "a.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 3
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_failed_torch_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"v": torch.tensor([1.0])}, path)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_checkpoint({"v": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["v"], torch.tensor([1.0]))


def test_failed_replace_leaves_previous_checkpoint_and_no_tmp(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ckpt.save_checkpoint({"v": torch.tensor([1.0])}, path)

    def boom(src, dst):
        raise OSError("rename failed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="rename failed"):
        ckpt.save_checkpoint({"v": torch.tensor([2.0])}, path)
    monkeypatch.undo()
    assert torch.equal(ckpt.load_checkpoint(path)["v"], torch.tensor([1.0]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_rng_state_restores_all_generators(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    state = ckpt.capture_rng_state()
    ckpt.save_checkpoint({"rng": state}, tmp_path / "r.pt")
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.restore_rng_state(ckpt.load_checkpoint(tmp_path / "r.pt")["rng"])
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3] and torch.equal(got[3], expected[3])


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
