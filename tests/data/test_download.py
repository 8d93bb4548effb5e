"""`python -m kpfast.data.coco download` against a local HTTP server (loopback only) serving
small COCO-shaped zip archives made here: download, resume with Range, verification, refusal to
overwrite, annotations-only, and the loader reading the result."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kpfast.data import download as dl
from kpfast.data.download import Archive, DownloadError, download_coco

from loopback import serve  # tests/loopback.py (tests/ is on sys.path: its conftest.py)

REPO_ROOT = Path(__file__).resolve().parents[2]


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _person_keypoints(split: str) -> bytes:
    """A minimal valid person-keypoints file: one image, one annotated person."""
    kps = []
    for k in range(17):
        kps += [10.0 + k, 20.0 + k, 2]
    data = {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "width": 64, "height": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5.0, 5.0, 40.0, 50.0],
                         "area": 2000.0, "iscrowd": 0, "num_keypoints": 17, "keypoints": kps}],
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": [f"k{i}" for i in range(17)], "skeleton": [[1, 2]]}],
        "info": {"description": split},
    }
    return json.dumps(data).encode()


def _jpeg() -> bytes:
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 127, np.uint8))
    assert ok
    return buf.tobytes()


@pytest.fixture
def site():
    """Archives shaped like COCO's, served on 127.0.0.1 with Range support and fault injection."""
    payloads = {
        "annotations/annotations_trainval2017.zip": _zip({
            "annotations/person_keypoints_val2017.json": _person_keypoints("val"),
            "annotations/person_keypoints_train2017.json": _person_keypoints("train"),
            "annotations/instances_val2017.json": b"{}" * 5000,   # not needed: must not be extracted
        }),
        "zips/val2017.zip": _zip({"val2017/000000000001.jpg": _jpeg(),
                                  "val2017/000000000002.jpg": bytes(range(256)) * 200}),
        "zips/train2017.zip": _zip({"train2017/000000000001.jpg": _jpeg()}),
    }
    table = {key: Archive(a.url_path, len(payloads[a.url_path]), hashlib.md5(payloads[a.url_path]).hexdigest())
             for key, a in dl.ARCHIVES.items()}
    with serve(payloads) as server:
        yield {"url": server.url, "archives": table, "state": server.state, "payloads": payloads}


def _get(site, root, **kw):
    kw.setdefault("retries", 0)
    return download_coco(root, base_url=site["url"], archives=site["archives"], progress=False, **kw)


def test_val_download_gives_the_loader_layout(site, tmp_path):
    root = tmp_path / "coco"
    _get(site, root, split="val")
    assert (root / "annotations" / "person_keypoints_val2017.json").read_bytes() == _person_keypoints("val")
    assert (root / "val2017" / "000000000002.jpg").read_bytes() == bytes(range(256)) * 200
    assert not (root / "annotations" / "instances_val2017.json").exists()      # only what the loader reads
    assert not (root / "annotations" / "person_keypoints_train2017.json").exists()
    assert not (root / "train2017").exists()
    assert not list(root.glob("*.zip")) and not list(root.glob("*.part"))      # archives removed by default
    from kpfast.data.coco import resolve_coco_paths

    ann, images = resolve_coco_paths(root, "val")
    assert ann == root / "annotations" / "person_keypoints_val2017.json" and images == root / "val2017"

    # A rerun finds the stamps and downloads nothing.
    before = len(site["state"]["requests"])
    _get(site, root, split="val")
    assert len(site["state"]["requests"]) == before


def test_loader_reads_the_downloaded_split(site, tmp_path):
    pytest.importorskip("pycocotools")
    pytest.importorskip("albumentations")
    from kpfast.data.coco import CocoKeypointDataset

    root = tmp_path / "coco"
    _get(site, root, split="val")
    dataset = CocoKeypointDataset(root, "val")
    assert len(dataset) == 1
    assert tuple(dataset[0]["keypoints"].shape) == (17, 2)


def test_annotations_only_and_all(site, tmp_path):
    root = tmp_path / "coco"
    _get(site, root, split="all", annotations_only=True)
    assert (root / "annotations" / "person_keypoints_train2017.json").is_file()
    assert (root / "annotations" / "person_keypoints_val2017.json").is_file()
    assert not (root / "val2017").exists() and not (root / "train2017").exists()
    assert [p for p, _ in site["state"]["requests"]] == ["annotations/annotations_trainval2017.zip"]
    _get(site, root, split="train")
    assert (root / "train2017" / "000000000001.jpg").is_file()
    # train's annotations were already extracted: the annotations archive is not fetched again
    assert [p for p, _ in site["state"]["requests"]].count("annotations/annotations_trainval2017.zip") == 1


def test_interrupted_download_resumes_with_range_within_the_run(site, tmp_path):
    site["state"]["cut_next"] = 1
    root = tmp_path / "coco"
    _get(site, root, split="val", annotations_only=True, retries=2)
    requests = site["state"]["requests"]
    size = site["archives"]["annotations"].size
    assert requests[0] == ("annotations/annotations_trainval2017.zip", None)
    assert requests[1] == ("annotations/annotations_trainval2017.zip", f"bytes={size // 2}-")
    assert (root / "annotations" / "person_keypoints_val2017.json").read_bytes() == _person_keypoints("val")


def test_interrupted_download_resumes_on_the_next_run(site, tmp_path):
    site["state"]["cut_next"] = 1
    root = tmp_path / "coco"
    with pytest.raises(DownloadError, match=r"rerun the same command to resume") as info:
        _get(site, root, split="val", annotations_only=True, retries=0)
    part = root / "annotations_trainval2017.zip.part"
    assert str(part) in str(info.value)
    size = site["archives"]["annotations"].size
    assert part.stat().st_size == size // 2
    _get(site, root, split="val", annotations_only=True)
    assert site["state"]["requests"][-1][1] == f"bytes={size // 2}-"
    assert not part.exists()
    assert (root / "annotations" / "person_keypoints_val2017.json").is_file()


def test_server_ignoring_range_restarts_from_zero(site, tmp_path):
    site["state"]["cut_next"] = 1
    site["state"]["ignore_range"] = True
    root = tmp_path / "coco"
    _get(site, root, split="val", annotations_only=True, retries=1)
    assert (root / "annotations" / "person_keypoints_val2017.json").read_bytes() == _person_keypoints("val")


def test_checksum_mismatch_is_refused_and_the_file_deleted(site, tmp_path):
    site["state"]["corrupt"].add("zips/val2017.zip")
    root = tmp_path / "coco"
    with pytest.raises(DownloadError, match=r"val2017\.zip\.part: MD5 [0-9a-f]{32}, expected [0-9a-f]{32}"):
        _get(site, root, split="val")
    assert not (root / "val2017.zip.part").exists() and not (root / "val2017").exists()


def test_wrong_size_on_server_is_refused_before_downloading(site, tmp_path):
    table = dict(site["archives"])
    a = table["annotations"]
    table["annotations"] = Archive(a.url_path, a.size + 10, a.md5)
    with pytest.raises(DownloadError, match=r"expected .*wrong --base-url"):
        download_coco(tmp_path, "val", True, base_url=site["url"], archives=table, progress=False, retries=0)
    assert not (tmp_path / "annotations_trainval2017.zip.part").exists() or \
        (tmp_path / "annotations_trainval2017.zip.part").stat().st_size == 0


def test_different_existing_file_is_not_overwritten(site, tmp_path):
    root = tmp_path / "coco"
    mine = root / "annotations" / "person_keypoints_val2017.json"
    mine.parent.mkdir(parents=True)
    mine.write_text('{"my": "own file"}')
    with pytest.raises(FileExistsError, match=r"person_keypoints_val2017\.json exists and differs"):
        _get(site, root, split="val", annotations_only=True)
    assert mine.read_text() == '{"my": "own file"}'
    # The verified archive is kept, so the rerun after moving the file away downloads nothing.
    mine.unlink()
    before = len(site["state"]["requests"])
    _get(site, root, split="val", annotations_only=True)
    assert len(site["state"]["requests"]) == before and mine.read_bytes() == _person_keypoints("val")


def test_identical_existing_file_is_kept(site, tmp_path):
    root = tmp_path / "coco"
    same = root / "annotations" / "person_keypoints_val2017.json"
    same.parent.mkdir(parents=True)
    same.write_bytes(_person_keypoints("val"))
    _get(site, root, split="val", annotations_only=True)
    assert same.read_bytes() == _person_keypoints("val")


def test_different_existing_archive_is_refused(site, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    (root / "annotations_trainval2017.zip").write_bytes(b"not the archive")
    with pytest.raises(FileExistsError, match=r"annotations_trainval2017\.zip exists but is not the expected"):
        _get(site, root, split="val", annotations_only=True)
    assert (root / "annotations_trainval2017.zip").read_bytes() == b"not the archive"
    assert site["state"]["requests"] == []


def test_zip_member_escaping_root_is_refused(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(_zip({"../outside.txt": b"x"}))
    with pytest.raises(DownloadError, match="outside"):
        dl.extract(bad, tmp_path / "root")
    assert not (tmp_path / "outside.txt").exists()


def test_corrupt_member_fails_crc(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as z:   # stored: the bytes are the data
        z.writestr("val2017/a.bin", bytes(1000))
    data = bytearray(buffer.getvalue())
    data[30 + len("val2017/a.bin") + 500] ^= 0xFF   # one byte inside the member's data
    path = tmp_path / "c.zip"
    path.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match=r"val2017/a\.bin is corrupt"):
        dl.extract(path, tmp_path / "root")
    assert not (tmp_path / "root" / "val2017" / "a.bin").exists()
    assert not (tmp_path / "root" / "val2017" / "a.bin.extracting").exists()


def test_bad_split_names_the_choices():
    with pytest.raises(ValueError, match=r"split must be one of \['all', 'train', 'val'\], got 'test'"):
        dl.plan("test", False)


def test_command_line_error_is_one_line(site, tmp_path):
    root = tmp_path / "coco"
    root.mkdir()
    (root / "annotations_trainval2017.zip").write_bytes(b"mine")
    cmd = [sys.executable, "-m", "kpfast.data.coco", "download", str(root), "--annotations-only",
           "--base-url", site["url"]]
    # The command line uses the real table; the existing file is checked before any request.
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2
    # runpy warns that kpfast.data imported kpfast.data.coco before running it as __main__
    # (kpfast/data/__init__.py imports it eagerly); harmless, and not the error line.
    lines = [line for line in result.stderr.splitlines()
             if line.strip() and "found in sys.modules after import of package" not in line]
    assert len(lines) == 1 and "annotations_trainval2017.zip exists but is not the expected archive" in lines[0]
    assert (root / "annotations_trainval2017.zip").read_bytes() == b"mine"


def test_base_url_from_environment(site, tmp_path, monkeypatch):
    monkeypatch.setenv(dl.BASE_URL_ENV, site["url"].rstrip("/"))
    download_coco(tmp_path, "val", True, archives=site["archives"], progress=False, retries=0)
    assert (tmp_path / "annotations" / "person_keypoints_val2017.json").is_file()
    assert site["state"]["requests"] == [("annotations/annotations_trainval2017.zip", None)]
