"""A checkpoint may not make torch.load allocate more than its file holds: compressed records
(a zip bomb: 390 KB -> 400 MB) and records declaring more bytes than the file are refused in one
line before anything is loaded (kpfast.engine.checkpointer.check_declared_sizes)."""

import io
import zipfile

import pytest
import torch

from kpfast.engine.checkpointer import CheckpointError, load_checkpoint, save_checkpoint


def _recompressed(source: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename), compress_type=zipfile.ZIP_DEFLATED)
    return out.getvalue()


def test_a_deflated_checkpoint_that_inflates_far_beyond_its_size_is_refused(tmp_path):
    buffer = io.BytesIO()
    torch.save({"config": {}, "model": {"w": torch.zeros(10_000_000)}}, buffer)  # 40 MB of zeros
    path = tmp_path / "bomb.pt"
    path.write_bytes(_recompressed(buffer.getvalue()))
    assert path.stat().st_size < 400_000
    with pytest.raises(CheckpointError, match=r"bomb\.pt.*compressed"):
        load_checkpoint(path)


def test_records_declaring_more_than_the_file_holds_are_refused(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"config": {}, "w": torch.ones(1000)}, path)
    data = bytearray(path.read_bytes())
    # Central-directory entries: the uncompressed size sits 24 bytes after the signature.
    index = data.rfind(b"PK\x01\x02")
    data[index + 24:index + 28] = (2**31).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="declare"):
        load_checkpoint(path)


def test_an_ordinary_checkpoint_still_loads(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint({"config": {}, "w": torch.arange(5.0)}, path)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(5.0))
