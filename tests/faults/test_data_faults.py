"""Fault probes of the data pipeline (what it reads, refuses and never touches: docs/data.md),
kept as regression tests.

A small synthetic dataset is generated per test module; each probe damages a copy the way a
careless user, a broken dataset or a hostile file would, and checks what is refused, skipped,
counted and reported, and that nothing outside the program's own files is deleted.
"""

import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

import kpfast
from kpfast.data import AnnotationError, CocoKeypointDataset
from kpfast.data import transforms
from kpfast.data.synthetic import generate_synthetic_dataset

PACKAGE_ROOT = Path(os.path.abspath(kpfast.__file__)).parents[1]
ANN = Path("annotations/person_keypoints_val2017.json")
IMG = Path("images/val2017")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return generate_synthetic_dataset(tmp_path_factory.mktemp("faults") / "ds", num_train=0, num_val=6, seed=5)


@pytest.fixture
def dataset_copy(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width x height`` followed by a small zlib stream of zeros: the
    shape of a decompression bomb (here without the gigabytes, since it must never be decoded)."""
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100000, 9))
            + chunk(b"IEND", b""))


def _first_image(root: Path) -> tuple[dict, Path]:
    data = json.loads((root / ANN).read_text())
    image = data["images"][0]
    return image, root / IMG / image["file_name"]


def test_decompression_bomb_is_never_decoded_skipped_and_counted(dataset_copy, monkeypatch, caplog):
    """A 32000x32000 PNG listed as a small image is refused from its header, never decoded."""
    image, path = _first_image(dataset_copy)
    path.write_bytes(_png_header_only(32000, 32000))
    decoded = []
    real = cv2.imdecode
    monkeypatch.setattr(transforms.cv2, "imdecode", lambda buf, flags: decoded.append(len(buf)) or real(buf, flags))
    ds = CocoKeypointDataset(dataset_copy, "val", train=False, max_bad_fraction=0.9, input_size=(64, 48))
    rows = [i for i in range(len(ds)) if ds.instances[i].image_id == image["id"]]
    assert rows
    with caplog.at_level(logging.WARNING, logger="kpfast.data.coco"):
        sample = ds[rows[0]]
    assert sample["meta"]["image_id"] != image["id"]
    assert len(decoded) == 1  # only the redrawn, valid image was decoded
    message = next(r.getMessage() for r in caplog.records if "cannot decode" in r.getMessage())
    assert "32000x32000" in message and "max_image_pixels" in message and path.name in message
    assert ds.epoch_counts()["failed_decodes"] == 1
    assert "32000x32000" in ds.bad_files[str(path)]


def test_image_whose_header_size_differs_from_the_annotation_is_skipped(dataset_copy, caplog):
    image, path = _first_image(dataset_copy)
    big = np.zeros((image["height"] + 40, image["width"] + 30, 3), np.uint8)
    path.write_bytes(cv2.imencode(".png", big)[1].tobytes())  # within the pixel bound, wrong size
    ds = CocoKeypointDataset(dataset_copy, "val", train=False, max_bad_fraction=0.9, input_size=(64, 48))
    row = next(i for i in range(len(ds)) if ds.instances[i].image_id == image["id"])
    with caplog.at_level(logging.WARNING, logger="kpfast.data.coco"):
        assert ds[row]["meta"]["image_id"] != image["id"]
    expected = f"header size {image['width'] + 30}x{image['height'] + 40} differs from the annotation's"
    assert any(expected in r.getMessage() for r in caplog.records)


def test_pixel_bound_is_configurable_and_checked(dataset_copy):
    image, _ = _first_image(dataset_copy)
    ds = CocoKeypointDataset(dataset_copy, "val", train=False, max_bad_fraction=1.0, input_size=(64, 48),
                             max_image_pixels=image["width"] * image["height"] - 1)
    row = next(i for i in range(len(ds)) if ds.instances[i].image_id == image["id"])
    ds[row]
    assert any("exceeds max_image_pixels" in reason for reason in ds.bad_files.values())
    with pytest.raises(ValueError, match="max_image_pixels must be > 0"):
        CocoKeypointDataset(dataset_copy, "val", max_image_pixels=0)


@pytest.mark.parametrize("header,size", [
    (lambda w, h: cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8))[1].tobytes(), (37, 21)),
    (lambda w, h: cv2.imencode(".jpg", np.zeros((h, w, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(), (37, 21)),
    (lambda w, h: cv2.imencode(".png", np.zeros((h, w, 3), np.uint8))[1].tobytes(), (37, 21)),
    (lambda w, h: cv2.imencode(".bmp", np.zeros((h, w, 3), np.uint8))[1].tobytes(), (37, 21)),
    (lambda w, h: cv2.imencode(".webp", np.zeros((h, w, 3), np.uint8))[1].tobytes(), (37, 21)),
    (lambda w, h: cv2.imencode(".webp", np.zeros((h, w, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes(), (37, 21)),
    (lambda w, h: _png_header_only(w, h), (32000, 32000)),
])
def test_header_reader_gives_the_encoded_size(header, size):
    assert transforms.image_size_from_header(header(*size)) == size


def test_header_reader_refuses_unknown_or_broken_headers():
    assert transforms.image_size_from_header(b"GIF89a" + b"\0" * 20) is None
    jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    assert transforms.image_size_from_header(jpeg[:20]) is None  # cut before the frame header


def test_duplicate_annotation_ids_are_rejected_before_evaluation(dataset_copy):
    """Duplicate ids are refused: pycocotools would keep one annotation per id and report a wrong AP."""
    data = json.loads((dataset_copy / ANN).read_text())
    dup = data["annotations"][0]["id"]
    data["annotations"][1]["id"] = dup
    (dataset_copy / ANN).write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=rf"duplicate annotation id\(s\) {dup}:"):
        CocoKeypointDataset(dataset_copy, "val", train=False)


def test_train_cli_refuses_a_data_root_that_is_another_dataset(tmp_path):
    """--data_root holding another synthetic size (or anything else) is refused and left untouched."""
    root = generate_synthetic_dataset(tmp_path / "mine", num_train=3, num_val=2, seed=0)
    (root / "notes.txt").write_text("keep me")
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT))
    proc = subprocess.run([sys.executable, "-m", "kpfast.train", "--data_root", str(root), "--epochs", "1",
                           "--output_dir", str(tmp_path / "runs")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and str(root) in proc.stderr
    assert "another data root" in proc.stderr
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "runs") == ["mine"]
