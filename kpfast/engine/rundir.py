"""The run directory: one fresh folder per training run, never shared with another run.

``create_run_dir`` is the only place a run directory comes from. It guarantees that every file
a run later writes, overwrites or deletes lies in a directory this run created itself:

* ``run_name`` must be a single plain path component (no separator, no ``..``, not absolute),
  so a run can never write outside ``output_dir``;
* a default name is ``<prefix>-<YYYYmmdd-HHMMSS>-<6 hex digits>`` and is created with
  ``mkdir(exist_ok=False)`` in a retry loop, so two runs started in the same second (or
  racing on a shared file system) get two directories;
* an explicitly named directory that already exists is refused: continuing a run is
  ``--resume``, never a silent overwrite.

A fresh folder gets its run id in a marker file (:data:`kpfast.outputs.RUN_MARKER`); every
checkpoint of the run records the same id, which is how a resume recognises the run's own folder
(:func:`kpfast.engine.checkpointer.plan_resume`).
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from pathlib import Path

from kpfast.outputs import RUN_MARKER, atomic_write_bytes

__all__ = ["RunDirError", "check_output_dir", "check_run_name", "create_run_dir", "default_run_name", "read_run_id",
           "write_run_marker"]

_ATTEMPTS = 100
_MAX_MARKER_BYTES = 256


class RunDirError(ValueError):
    """The run directory cannot be created; the message says why and what to do."""


def check_run_name(name: str) -> str:
    """Return ``name`` if it is one plain path component; raise ValueError saying why not."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"expected a non-empty directory name, got {name!r}")
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set()) | {"\\"}
    if any(sep in name for sep in separators):
        raise ValueError(f"expected a single directory name without path separators, got {name!r}")
    if name in (".", ".."):
        raise ValueError(f"expected a directory name, got {name!r} (it would leave the output directory)")
    if "\0" in name:
        raise ValueError(f"expected a directory name without NUL characters, got {name!r}")
    return name


def default_run_name(prefix: str) -> str:
    """``<prefix>-<timestamp>-<random suffix>``: unique even for runs started in the same second."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_output_dir(output_dir: str | Path) -> None:
    """Raise RunDirError unless ``output_dir`` is, or can be created as, a writable directory.

    Creates nothing: called at start-up so that a bad --output_dir fails before the data and
    the model are built."""
    output_dir = Path(output_dir)
    probe = output_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "exists and" if probe == output_dir else f"is under {probe}, which"
        raise RunDirError(f"train.output_dir: {output_dir} {where} is not a directory; pass another --output_dir")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise RunDirError(f"train.output_dir: {probe} is not writable (read-only or permission denied); "
                          "pass a writable --output_dir")


def _make_output_dir(output_dir: Path) -> None:
    check_output_dir(output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"train.output_dir: cannot create {output_dir} ({exc.strerror}); "
                          "pass a writable --output_dir") from None


def _mkdir_new(run_dir: Path) -> None:
    """mkdir that fails with FileExistsError when the directory exists (never reuses one), and
    with a one-line RunDirError when the output directory is not writable."""
    try:
        run_dir.mkdir(exist_ok=False)
    except PermissionError:
        raise RunDirError(f"train.output_dir: cannot create {run_dir} (permission denied or read-only); "
                          "pass a writable --output_dir") from None


def create_run_dir(output_dir: str | Path, run_name: str | None, prefix: str = "run") -> Path:
    """Create and return a new run directory under ``output_dir``, empty but for its run-id
    marker (:func:`write_run_marker`).

    ``run_name=None`` picks a unique default name from ``prefix``; an explicit name must be a
    single path component and must not exist yet.
    """
    output_dir = Path(output_dir)
    _make_output_dir(output_dir)
    if run_name is not None:
        try:
            check_run_name(run_name)
        except ValueError as exc:
            raise RunDirError(f"train.run_name: {exc}") from None
        run_dir = output_dir / run_name
        try:
            _mkdir_new(run_dir)
        except FileExistsError:
            raise RunDirError(
                f"train.run_name: {run_dir} already exists; continue it with --resume {run_dir} "
                "or choose another --set train.run_name=NAME"
            ) from None
        write_run_marker(run_dir)
        return run_dir
    for _ in range(_ATTEMPTS):
        run_dir = output_dir / default_run_name(prefix)
        try:
            _mkdir_new(run_dir)
        except FileExistsError:
            continue  # another run took this name in the same second: draw another suffix
        write_run_marker(run_dir)
        return run_dir
    raise RunDirError(f"train.output_dir: could not create a unique run directory in {output_dir} "
                      f"after {_ATTEMPTS} attempts")


def write_run_marker(run_dir: Path) -> str:
    """Give a freshly created run folder its id (written atomically) and return it."""
    run_id = f"{Path(run_dir).name}-{uuid.uuid4().hex}"
    atomic_write_bytes(Path(run_dir) / RUN_MARKER, run_id.encode())
    return run_id


def read_run_id(run_dir: Path) -> str | None:
    """The id in ``run_dir``'s marker, or None when it has none (not a kpfast run folder)."""
    marker = Path(run_dir) / RUN_MARKER
    try:
        if not marker.is_file() or marker.stat().st_size > _MAX_MARKER_BYTES:
            return None
        return marker.read_bytes().decode("ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None
