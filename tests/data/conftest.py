"""Fixtures of the data tests: the real coco_sample (skipped when absent) and small synthetic sets."""

import os
import shutil
from pathlib import Path

import cv2
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]

# One core's worth of work per test process; OpenCV's thread pool only adds noise here.
cv2.setNumThreads(1)
torch.set_num_threads(1)


def coco_sample_root() -> Path | None:
    """``$KPFAST_COCO_SAMPLE`` or ``<repo>/../shared/data/coco_sample``, when present."""
    env = os.environ.get("KPFAST_COCO_SAMPLE")
    root = Path(env) if env else REPO_ROOT.parent / "shared" / "data" / "coco_sample"
    if not root.is_dir() and not env:
        # Worktrees live one level deeper (<wt>/<name>); look beside the main checkout too.
        alt = REPO_ROOT.parent.parent / "shared" / "data" / "coco_sample"
        root = alt if alt.is_dir() else root
    return root if (root / "annotations" / "person_keypoints_val2017.json").is_file() else None


@pytest.fixture(scope="session")
def coco_sample() -> Path:
    root = coco_sample_root()
    if root is None:
        pytest.skip("coco_sample not found (set KPFAST_COCO_SAMPLE or put it at ../shared/data/coco_sample)")
    return root


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
