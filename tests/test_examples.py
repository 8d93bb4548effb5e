"""The documented examples run and do what docs/integration.md says they do."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_pytorch_loop_learns_keypoints_without_target_heatmaps():
    """HeatmapLoss from keypoints (the target rendered in the kernel) and decode_heatmaps in an
    ordinary loop: the loss falls and the decoded keypoints converge on the labelled ones."""
    result = _load("plain_pytorch_loop").train(steps=80)
    assert result["last_loss"] < result["first_loss"] / 10
    assert result["error_before"] > 3.0
    assert result["error_after"] < 1.0
