"""How every kpfast command writes a file: atomically, and never over an input or a training
run's own file (docs/files.md, "Training" and "Output files").

Atomic writes (:func:`atomic_write_bytes`, used for checkpoints, metrics.csv, config.yaml, plots,
eval/predict results and exports): the bytes go to a temporary file ``.<name>.*.tmp`` in the
destination directory, are fsync'ed, and the file is renamed over the destination with
``os.replace``; a crash or exception at any point leaves the previous file intact.

The output-path rule (:class:`OutputGuard`, for files written outside a run folder: eval's
--results/--metrics, predict's overlays and results.json, export's --output, the data tools'
outputs). An output is refused, before anything is written, when it is:

* one of the command's inputs (the checkpoint, an image, an annotation or detections file, a
  config file), compared resolved (``..``, symlinks) and by inode (hard links);
* inside a directory the command reads (an image folder, the dataset root);
* a file of a training run: in a run folder (one holding :data:`RUN_MARKER`), a name the trainer
  writes (:data:`RUN_FILES`, any ``*.pt``, anything under ``topk/`` or ``tensorboard/``); other
  new files there (an ONNX export, eval results) are allowed;
* a directory, or the same file as another output of the same command;
* an existing file, when the command does not replace files (predict without --overwrite).

This module imports nothing from kpfast: the engine and the data tools both write through it.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

__all__ = ["AtomicWriteError", "OutputGuard", "OutputPathError", "RUN_FILES", "RUN_MARKER", "atomic_write_bytes",
           "run_folder_of"]

# Marks a training run folder and holds the run's id (written by kpfast.engine.rundir; every
# checkpoint of the run records the same id, docs/files.md "Training").
RUN_MARKER = ".kpfast-run"


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path | str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (tmp file in the same dir, fsync, os.replace).

    On any failure (a full disk, a read-only or vanished directory) the temporary file is
    removed, ``path`` keeps its previous content, and the OSError raised names ``path``.
    """
    path = Path(path)
    tmp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        if tmp_name is not None:
            try:
                os.unlink(tmp_name)
            except FileNotFoundError:
                pass
        if isinstance(exc, OSError) and not isinstance(exc, AtomicWriteError):
            reason = exc.strerror or str(exc)
            hint = "free some space or pass another --output_dir" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
                else "check that the directory exists and is writable"
            raise AtomicWriteError(
                exc.errno, f"cannot write {path}: {reason}; {hint} (any previous {path.name} is unchanged)"
            ) from exc
        raise
    _fsync_dir(path.parent)


class AtomicWriteError(OSError):
    """An atomic write failed; ``str()`` is one line naming the file and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


# What the trainer writes directly in its run folder (kpfast.engine.trainer, kpfast.engine.checkpointer).
RUN_FILES = frozenset({"last.pt", "best.pt", "metrics.csv", "config.yaml", "results.png", "val_predictions.jpg",
                       RUN_MARKER})
_RUN_SUBFOLDERS = ("topk", "tensorboard")


class OutputPathError(ValueError):
    """An output path that would replace an input or another run's file; one line, names the flag."""


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _run_file(path: Path, run: Path) -> bool:
    parts = path.resolve().relative_to(run).parts
    return (len(parts) > 1 and parts[0] in _RUN_SUBFOLDERS) or parts[-1] in RUN_FILES or parts[-1].endswith(".pt")


def run_folder_of(path: Path) -> Path | None:
    """The training run folder ``path`` lies in (its parent or any folder above), or None."""
    for folder in Path(path).resolve().parents:
        if (folder / RUN_MARKER).is_file():
            return folder
    return None


class OutputGuard:
    """Collects a command's inputs, then checks each output path against them (see module doc)."""

    def __init__(self, replace_existing: bool = True, replace_hint: str = ""):
        self.replace_existing = replace_existing
        self.replace_hint = replace_hint
        self._files: list[tuple[Path, str]] = []
        self._folders: list[tuple[Path, str]] = []
        self._outputs: list[tuple[Path, str]] = []

    def protect(self, path, what: str) -> None:
        """An input file (``what``: e.g. "the checkpoint") no output may be."""
        if path is not None:
            self._files.append((Path(path), what))

    def protect_folder(self, path, what: str) -> None:
        """A folder of inputs (``what``: e.g. "the image folder") no output may lie in."""
        if path is not None:
            self._folders.append((Path(path), what))

    def check(self, path, flag: str, advice: str | None = None) -> Path:
        """Return ``path`` when ``flag`` may write it; raise :class:`OutputPathError` saying why not
        (``advice``: what to do instead; default ``pass another FLAG``)."""
        path = Path(path)
        advice = advice or f"pass another {flag}"
        if path.is_dir():
            raise OutputPathError(f"{flag} {path} is a directory; pass a file name, e.g. {path / 'out.json'}")
        for other, what in self._files:
            if _same_file(path, other):
                raise OutputPathError(f"{flag} {path} is {what} {other}; writing would replace it: {advice}")
        for folder, what in self._folders:
            if _inside(path, folder):
                raise OutputPathError(f"{flag} {path} is inside {what} {folder}, which is read, never written: "
                                      f"{advice}")
        run = run_folder_of(path)
        if run is not None and _run_file(path, run):
            raise OutputPathError(f"{flag} {path} is a file of the training run in {run} (written only by that "
                                  f"run): {advice}")
        for other, other_flag in self._outputs:
            if _same_file(path, other) and other_flag != flag:
                raise OutputPathError(f"{flag} {path} is also {other_flag}; pass two different files")
        if not self.replace_existing and (path.exists() or path.is_symlink()):
            raise OutputPathError(f"{flag} {path} already exists and is not replaced{self.replace_hint}")
        if all(not _same_file(path, other) for other, _ in self._outputs):
            self._outputs.append((path, flag))
        return path

    def recheck(self) -> None:
        """Check every accepted output again right before writing (the paths may have changed)."""
        outputs, self._outputs = self._outputs, []
        for path, flag in outputs:
            self.check(path, flag)
