"""Run directories never collide, never leave output_dir, and never overwrite another run."""

import os
import threading
from pathlib import Path

import pytest

from kpfast.engine import rundir
from kpfast.engine.rundir import RunDirError, check_output_dir, check_run_name, create_run_dir


def test_explicit_name_that_exists_is_refused_and_left_untouched(tmp_path):
    first = create_run_dir(tmp_path, "exp")
    (first / "last.pt").write_bytes(b"first run")
    with pytest.raises(RunDirError) as info:
        create_run_dir(tmp_path, "exp")
    message = str(info.value)
    assert "already exists" in message and "--resume" in message and "\n" not in message
    assert (first / "last.pt").read_bytes() == b"first run"


def test_default_names_started_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    made = {create_run_dir(tmp_path, None, "litehrnet_18") for _ in range(50)}
    assert len(made) == 50 and all(p.parent == tmp_path and p.is_dir() for p in made)
    assert all(p.name.startswith("litehrnet_18-20260101-000000-") for p in made)


def test_a_colliding_default_name_is_retried_not_reused(tmp_path, monkeypatch):
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    suffixes = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(rundir.secrets, "token_hex", lambda n: next(suffixes))
    first = create_run_dir(tmp_path, None, "m")
    (first / "metrics.csv").write_text("first")
    second = create_run_dir(tmp_path, None, "m")
    assert first.name == "m-20260101-000000-aaaaaa" and second.name == "m-20260101-000000-bbbbbb"
    assert (first / "metrics.csv").read_text() == "first"


def test_concurrent_default_run_dirs_are_distinct(tmp_path, monkeypatch):
    # Force every thread onto the same timestamp and a tiny suffix space so that collisions
    # really happen and only mkdir(exist_ok=False) keeps the runs apart.
    monkeypatch.setattr(rundir.time, "strftime", lambda fmt: "20260101-000000")
    counter = iter(range(10**6))
    lock = threading.Lock()

    def few_suffixes(n):
        with lock:
            return f"{next(counter) % 40:06x}"

    monkeypatch.setattr(rundir.secrets, "token_hex", few_suffixes)
    results, errors = [], []

    def worker():
        try:
            results.append(create_run_dir(tmp_path, None, "m"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 30


@pytest.mark.parametrize("name", ["../../x", "../x", "/tmp/abs", "a/b", "a\\b", "..", ".", "", "  "])
def test_run_name_must_be_one_plain_component(tmp_path, name):
    out = tmp_path / "out"
    with pytest.raises(RunDirError, match="train.run_name"):
        create_run_dir(out, name)
    with pytest.raises(ValueError):
        check_run_name(name)
    # Nothing was created outside output_dir (output_dir itself may exist, empty).
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["out"])
    assert not out.exists() or not any(out.iterdir())


def test_output_dir_that_is_a_file_is_one_line(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    for path in (target, target / "below"):
        with pytest.raises(RunDirError, match="not a directory") as info:
            create_run_dir(path, None)
        assert "\n" not in str(info.value)
        with pytest.raises(RunDirError, match="not a directory"):
            check_output_dir(path)
    assert target.read_text() == "x"


def test_check_output_dir_creates_nothing(tmp_path):
    check_output_dir(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()


def test_read_only_output_dir_is_one_line(tmp_path):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    os.chmod(readonly, 0o555)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as root: permissions do not make a directory read-only (see the tmpfs test)")
        with pytest.raises(RunDirError, match="pass a writable --output_dir"):
            check_output_dir(readonly / "runs")
        with pytest.raises(RunDirError, match="pass a writable --output_dir"):
            create_run_dir(readonly, None)
    finally:
        os.chmod(readonly, 0o755)
