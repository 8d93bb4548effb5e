"""The one output-path rule for every kpfast command that writes a file outside its run folder
(eval's --results/--metrics, predict's overlays and results.json, export's --output, the data
tools' outputs); see docs/files.md, "Output files".

An output is refused, before anything is written, when it is:

* one of the command's inputs (the checkpoint, an image, an annotation or detections file, a
  config file), compared resolved (``..``, symlinks) and by inode (hard links);
* inside a directory the command reads (an image folder, the dataset root);
* a file of a training run: in a run folder (one holding :data:`kpfast.engine.resume.RUN_MARKER`),
  a name the trainer writes (:data:`RUN_FILES`, any ``*.pt``, anything under ``topk/`` or
  ``tensorboard/``); other new files there (an ONNX export, eval results) are allowed;
* a directory, or the same file as another output of the same command;
* an existing file, when the command does not replace files (predict without --overwrite).
"""

from __future__ import annotations

import os
from pathlib import Path

from kpfast.engine.resume import RUN_MARKER

__all__ = ["OutputGuard", "OutputPathError", "RUN_FILES", "run_folder_of"]

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
