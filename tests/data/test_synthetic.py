"""The embedded synthetic COCO-format dataset: valid COCO, sensible labels, deterministic, cached."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import kpfast

from kpfast.data import CocoKeypointDataset, build_dataloader, validate_keypoint_annotations
from kpfast.data import synthetic
from kpfast.data.info import COCO_KEYPOINT_NAMES


def _load(root, split):
    return json.loads((root / "annotations" / f"person_keypoints_{split}2017.json").read_text())


def test_loads_in_pycocotools_and_passes_validation(synthetic_root):
    pytest.importorskip("pycocotools")
    pytest.importorskip("albumentations")
    from pycocotools.coco import COCO

    for split, n in (("train", 24), ("val", 8)):
        path = synthetic_root / "annotations" / f"person_keypoints_{split}2017.json"
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
        assert len(coco.imgs) == n and len(coco.anns) >= n
        assert coco.loadCats(1)[0]["keypoints"] == list(COCO_KEYPOINT_NAMES)
        assert len(coco.loadCats(1)[0]["skeleton"]) == 19
        validate_keypoint_annotations(_load(synthetic_root, split), str(path))
        for img in coco.imgs.values():
            assert (synthetic_root / "images" / f"{split}2017" / img["file_name"]).is_file()
    ds = CocoKeypointDataset(synthetic_root, "train", input_size=(128, 96))
    assert len(ds) > 24 and ds.skipped_missing == 0
    assert ds[0]["image"].shape == (3, 128, 96)


def test_labels_follow_coco_rules(synthetic_root):
    data = _load(synthetic_root, "train")
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    vis_counts = np.zeros(3, int)
    for ann in data["annotations"]:
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        w, h = sizes[ann["image_id"]]
        assert ann["num_keypoints"] == int((kps[:, 2] > 0).sum())
        assert np.all(kps[kps[:, 2] == 0, :2] == 0)  # v=0 keypoints are stored as 0, 0
        lab = kps[kps[:, 2] > 0]
        assert np.all((lab[:, 0] >= 0) & (lab[:, 0] <= w - 1) & (lab[:, 1] >= 0) & (lab[:, 1] <= h - 1))
        x, y, bw, bh = ann["bbox"]
        assert bw > 0 and bh > 0 and x >= 0 and y >= 0 and x + bw <= w + 1e-6 and y + bh <= h + 1e-6
        # Labelled keypoints lie on the figure, i.e. inside its box (within the drawing radius).
        assert np.all((lab[:, 0] >= x - 3) & (lab[:, 0] <= x + bw + 3) & (lab[:, 1] >= y - 3) & (lab[:, 1] <= y + bh + 3))
        assert 0 < ann["area"] <= bw * bh
        vis_counts += np.bincount(kps[:, 2].astype(int), minlength=3)
    assert vis_counts[2] > vis_counts[1] > 0  # occlusion occurs, most keypoints visible
    assert vis_counts[0] > 0  # and some are outside the image


def test_people_are_drawn_where_the_keypoints_say(synthetic_root):
    """Frontal figures: the person's left shoulder/hip are on the image right of the right ones."""
    data = _load(synthetic_root, "train")
    left_right = 0
    total = 0
    for ann in data["annotations"]:
        kps = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        for left, right in ((5, 6), (11, 12)):
            if kps[left, 2] > 0 and kps[right, 2] > 0:
                total += 1
                left_right += kps[left, 0] > kps[right, 0]
    assert total > 20 and left_right / total > 0.9


def test_deterministic_for_a_seed(tmp_path):
    a = synthetic.generate_synthetic_dataset(tmp_path / "a", 5, 2, seed=11)
    b = synthetic.generate_synthetic_dataset(tmp_path / "b", 5, 2, seed=11)
    c = synthetic.generate_synthetic_dataset(tmp_path / "c", 5, 2, seed=12)
    for split in ("train", "val"):
        assert _load(a, split) == _load(b, split)
        assert _load(a, split) != _load(c, split)
    for f in sorted((a / "images" / "train2017").iterdir()):
        assert f.read_bytes() == (b / "images" / "train2017" / f.name).read_bytes()


def _tree(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_ensure_reuses_the_exact_cache_and_generates_a_missing_one(tmp_path, monkeypatch):
    monkeypatch.setenv("KPFAST_CACHE", str(tmp_path / "cache"))
    root = synthetic.ensure_synthetic_dataset(num_train=4, num_val=2, seed=1)
    assert root.parent == tmp_path / "cache"
    assert [p.name for p in root.parent.iterdir()] == [root.name]  # no temporary left behind
    calls = []
    real = synthetic.generate_synthetic_dataset
    monkeypatch.setattr(synthetic, "generate_synthetic_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    assert synthetic.ensure_synthetic_dataset(num_train=4, num_val=2, seed=1) == root
    assert calls == []  # reused
    empty = tmp_path / "empty"
    empty.mkdir()  # an empty folder is filled (atomically replaced by the generated one)
    assert synthetic.ensure_synthetic_dataset(empty, num_train=2, num_val=1) == empty
    assert len(calls) == 1 and synthetic._cache_is_valid(empty, 2, 1, 0)
    with pytest.raises(ValueError, match="num_train"):
        synthetic.generate_synthetic_dataset(tmp_path / "bad", num_train=-1)


@pytest.mark.parametrize("content", ["other_size", "incomplete", "foreign_manifest", "foreign_files", "file"])
def test_ensure_never_deletes_what_it_did_not_create(tmp_path, content):
    """A data root that is not exactly the requested dataset is refused, untouched: the generator
    never deletes what it did not create (docs/data.md)."""
    root = tmp_path / "root"
    if content == "file":
        root.write_text("precious")
    elif content in ("other_size", "incomplete"):
        synthetic.generate_synthetic_dataset(root, num_train=3, num_val=1, seed=0)
        (root / "precious.txt").write_text("mine")
        if content == "incomplete":
            next((root / "images" / "train2017").iterdir()).unlink()
    else:
        root.mkdir()
        (root / "precious.txt").write_text("mine")
        if content == "foreign_manifest":
            (root / "manifest.json").write_text('{"name": "my real COCO copy"}')
    before = _tree(root) if root.is_dir() else root.read_bytes()
    n_train = 2 if content == "other_size" else 3
    with pytest.raises(FileExistsError) as err:
        synthetic.ensure_synthetic_dataset(root, num_train=n_train, num_val=1, seed=0)
    message = str(err.value)
    assert "\n" not in message and str(root) in message
    assert "another data root" in message
    if content == "other_size":
        assert "num_train=3" in message and "num_train=2" in message
    after = _tree(root) if root.is_dir() else root.read_bytes()
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]  # no temporary left behind


def test_cli_and_default_config_loader(tmp_path, monkeypatch):
    pytest.importorskip("pycocotools")
    pytest.importorskip("albumentations")
    out = tmp_path / "cli"
    # The subprocess imports the kpfast under test (installed or built in place), not whatever
    # ./kpfast the working directory holds.
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(kpfast.__file__)))
    proc = subprocess.run([sys.executable, "-m", "kpfast.data.synthetic", str(out), "--images", "3",
                           "--val-images", "2", "--seed", "4"], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=package_root))
    assert proc.returncode == 0, proc.stderr
    assert "RuntimeWarning" not in proc.stderr
    assert len(_load(out, "train")["images"]) == 3 and len(_load(out, "val")["images"]) == 2
    # root: null -> the embedded synthetic dataset, built (once) in the cache.
    monkeypatch.setenv("KPFAST_CACHE", str(tmp_path / "cache"))
    cfg = {"data": {"root": None, "input_size": [64, 48], "batch_size": 4, "num_workers": 0,
                    "synthetic": {"num_train": 6, "num_val": 3}}}
    batch = next(iter(build_dataloader(cfg, "train")))
    assert batch["image"].shape == (4, 3, 64, 48) and batch["keypoints"].shape == (4, 17, 2)
    val = build_dataloader(cfg, "val")
    assert not val.dataset.train and len(val.dataset) >= 3
