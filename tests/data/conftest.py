"""Fixtures of the data tests: the real coco_sample (skipped when absent) and small synthetic sets."""

import shutil
from pathlib import Path

import cv2
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

# One core's worth of work per test process; OpenCV's thread pool only adds noise here.
cv2.setNumThreads(1)
torch.set_num_threads(1)


@pytest.fixture
def coco_copy(coco_sample, tmp_path) -> Path:
    """A writable copy of coco_sample (4 images) for fault injection."""
    dst = tmp_path / "coco"
    shutil.copytree(coco_sample, dst)
    return dst


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    from kpfast.data.synthetic import generate_synthetic_dataset

    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), num_train=24, num_val=8, seed=3)
