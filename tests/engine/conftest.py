"""Shared test fixtures: tiny configs and datasets so engine tests run in seconds on a CPU."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    from kpfast.data import ensure_synthetic_dataset

    return ensure_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "ds", num_train=24, num_val=4, seed=0)


@pytest.fixture
def tiny_overrides(synthetic_root, tmp_path):
    """Overrides making the default config a seconds-long CPU run."""
    return [
        "data.dataset=synthetic",
        f"data.root={synthetic_root}",
        "data.synthetic_num_train=24",
        "data.synthetic_num_val=4",
        "data.input_size=[64, 48]",
        "data.num_workers=0",
        "model.overrides={base_width: 8, num_branches: 2, num_modules: [1, 1, 1], stem_channels: 8}",
        "train.batch_size=16",
        "train.epochs=2",
        "train.eval_interval=1",
        "train.visualize_samples=0",
        "train.log_interval=1",
        f"train.output_dir={tmp_path / 'runs'}",
        "eval.flip_test=false",
        "schedule.warmup_epochs=0.5",
    ]
