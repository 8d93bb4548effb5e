"""Slow: the whole pipeline overfits the 12 annotated persons of coco_sample (AP >= 0.9)."""

import pytest

from kpfast.engine.config import load_config
from kpfast.engine.trainer import Trainer


@pytest.mark.slow
def test_overfits_coco_sample_instances(tmp_path, coco_sample):
    root = coco_sample  # the shared fixture skips when the sample is absent (tests/conftest.py)
    config = load_config("coco_sample_overfit", [
        f"data.root={root}",
        "train.epochs=150",
        "train.eval_interval=25",
        "train.cpu_threads=1",
        "train.visualize_samples=0",
        f"train.output_dir={tmp_path}",
        "train.run_name=overfit",
    ])
    trainer = Trainer(config, log=lambda s: None)
    result = trainer.train()
    aps = [row["val_AP"] for row in trainer.history if "val_AP" in row]
    assert len(aps) == 6
    assert aps[-1] >= 0.9, aps
    assert aps[-1] > aps[0], aps  # it learned: AP rose during training
    assert result.best_ap >= 0.9
