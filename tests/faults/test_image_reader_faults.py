"""The one image reader (kpfast.data.transforms.read_image_checked): the stored pixel frame for
every file (EXIF orientation ignored, as COCO annotations are), regular files only (a FIFO never
blocks), sizes checked before decoding (docs/data.md, "Image orientation")."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import kpfast
from kpfast.data.transforms import read_image_checked
from .test_cli_faults import _tiny_checkpoint

WORKTREE = Path(os.path.abspath(kpfast.__file__)).parents[1]


def _jpeg_with_orientation(path: Path, width=60, height=40, orientation=6) -> np.ndarray:
    """A JPEG stored ``width x height`` whose EXIF says 'display rotated' (6: 90 degrees CW).
    Left half dark, right half bright, so the frame it is decoded in is visible."""
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[:, width // 2:] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())
    return rgb


def test_exif_rotated_jpeg_is_decoded_in_its_stored_frame(tmp_path):
    path = tmp_path / "rotated.jpg"
    rgb = _jpeg_with_orientation(path)
    image, reason = read_image_checked(path, expected_size=(60, 40))
    assert reason == "" and image.shape == (40, 60, 3)
    assert image[:, :25].mean() < 30 and image[:, 35:].mean() > 225  # not rotated


def test_the_size_check_does_not_accept_the_swapped_size(tmp_path):
    path = tmp_path / "rotated.jpg"
    _jpeg_with_orientation(path)
    image, reason = read_image_checked(path, expected_size=(40, 60))
    assert image is None and "differs from the annotation" in reason


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "-c", "import sys; from kpfast.data.transforms import "
                           f"read_image_checked; print(read_image_checked({str(fifo)!r})[1])"],
                          cwd=WORKTREE, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "not a regular file" in done.stdout, done.stderr


def test_predict_skips_a_fifo_named_like_an_image(tmp_path):
    checkpoint = _tiny_checkpoint(tmp_path / "tiny.pt")
    fifo = tmp_path / "stuck.jpg"
    os.mkfifo(fifo)
    good = tmp_path / "good.jpg"
    _jpeg_with_orientation(good)
    env = dict(os.environ, PYTHONPATH=str(WORKTREE))
    done = subprocess.run([sys.executable, "-m", "kpfast.predict", "--checkpoint", str(checkpoint), str(fifo),
                           str(good),
                           "--output-dir", str(tmp_path / "out"), "--device", "cpu"],
                          cwd=WORKTREE, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "stuck.jpg" in done.stderr and "not a regular file" in done.stderr
    assert "stored pixel frame" in done.stdout


def test_the_reader_returns_the_file_bytes_exactly(tmp_path):
    """Read into a buffer of the file's size (plus one byte): every byte, nothing more, for an
    empty file too."""
    from kpfast.data.transforms import _read_regular_file

    for size in (0, 1, 4095, 4096, 150_001):
        path = tmp_path / f"f{size}.jpg"
        payload = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
        path.write_bytes(payload)
        data, reason = _read_regular_file(path)
        assert reason == "" and data.dtype == np.uint8 and data.tobytes() == payload


def test_a_file_that_grows_while_read_is_refused(tmp_path, monkeypatch):
    """fstat's size bounds the read; bytes beyond it mean the file changed under the reader."""
    from kpfast.data import transforms

    path = tmp_path / "growing.jpg"
    path.write_bytes(b"\xff\xd8" + b"\x00" * 1000)
    real_fstat = os.fstat

    def stale_fstat(fd):  # the size before the last 500 bytes were appended
        info = real_fstat(fd)
        return os.stat_result((info.st_mode, info.st_ino, info.st_dev, info.st_nlink, info.st_uid, info.st_gid,
                               info.st_size - 500, info.st_atime, info.st_mtime, info.st_ctime))

    monkeypatch.setattr(transforms.os, "fstat", stale_fstat)
    data, reason = transforms._read_regular_file(path)
    assert data is None and reason == "the file grew while it was read (fstat said 502 bytes)"
