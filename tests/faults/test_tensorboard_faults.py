"""TensorBoard on a full or read-only disk: one log line naming the folder, no background-thread
traceback, training goes on (kpfast.engine.reporting.SafeSummaryWriter)."""

import errno
import time

import pytest

from kpfast.engine.reporting import SafeSummaryWriter


def _full_disk(monkeypatch):
    from tensorboard.summary.writer import record_writer

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)


def test_a_full_disk_in_the_writer_thread_is_one_line_and_no_traceback(tmp_path, monkeypatch, capfd):
    _full_disk(monkeypatch)
    lines = []
    writer = SafeSummaryWriter(tmp_path / "tb", lines.append)
    for step in range(3):
        writer.add_scalar("train/loss", 1.0, step)
        writer.flush()
        time.sleep(0.1)
    writer.add_scalar("train/loss", 1.0, 4)
    writer.close()
    err = capfd.readouterr().err
    assert "Traceback" not in err, err
    assert len(lines) == 1 and str(tmp_path / "tb") in lines[0] and "No space left" in lines[0]
    assert not writer.enabled


def test_a_byte_string_error_is_shown_as_text(tmp_path, monkeypatch):
    lines = []
    writer = SafeSummaryWriter(tmp_path / "tb", lines.append)

    def fail(*args, **kwargs):
        raise RuntimeError(b"/some/path/events.out: Read-only file system")

    monkeypatch.setattr(writer._writer, "add_scalar", fail)
    writer.add_scalar("x", 1.0, 0)
    writer.add_scalar("x", 1.0, 1)
    assert len(lines) == 1 and "b'" not in lines[0] and "Read-only file system" in lines[0]
    writer.close()


def test_a_folder_that_cannot_be_made_turns_tensorboard_off(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    lines = []
    writer = SafeSummaryWriter(blocker / "tb", lines.append)
    writer.add_scalar("x", 1.0, 0)
    writer.flush()
    writer.close()
    assert len(lines) == 1 and str(blocker / "tb") in lines[0] and not writer.enabled
