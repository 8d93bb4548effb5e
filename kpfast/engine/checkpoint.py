"""Atomic checkpoint files, RNG-state capture and restore, top-k bookkeeping.

Every write goes to a temporary file in the destination directory, is fsync'ed, and then
renamed over the destination with ``os.replace``; a crash or exception at any point leaves the
previous file intact. Checkpoints hold only tensors and primitive containers so that they load
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "atomic_write_bytes",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "TopKCheckpoints",
]


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
    """Write ``payload`` to ``path`` atomically (tmp file in the same dir, fsync, os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp_name, 0o666 & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def save_checkpoint(state: dict, path: Path | str) -> None:
    """Serialise ``state`` with torch.save into memory, then write it atomically to ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


# --------------------------------------------------------------------------- RNG state


def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states as tensors/primitive containers."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state = {
        "python": {"version": py_version, "state": list(py_state), "gauss": py_gauss},
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["gauss"],
        )
    )
    torch.set_rng_state(state["torch"].cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) != torch.cuda.device_count():
            # A different number of visible GPUs: restore what matches, in order.
            cuda_states = cuda_states[: torch.cuda.device_count()]
        for index, cuda_state in enumerate(cuda_states):
            torch.cuda.set_rng_state(cuda_state.cpu(), index)


# --------------------------------------------------------------------------- top-k


class TopKCheckpoints:
    """Keeps the ``k`` best checkpoints by a metric (higher is better) in ``directory``.

    File names carry the epoch and the metric; the list is part of the trainer state so that a
    resumed run keeps managing the same files.
    """

    def __init__(self, directory: Path | str, k: int):
        if k < 0:
            raise ValueError(f"k: expected >= 0, got {k}")
        self.directory = Path(directory)
        self.k = k
        self.entries: list[dict] = []  # {"metric": float, "epoch": int, "file": str}

    def would_keep(self, metric: float) -> bool:
        if self.k == 0:
            return False
        return len(self.entries) < self.k or metric > min(e["metric"] for e in self.entries)

    def add(self, state: dict, metric: float, epoch: int) -> Path | None:
        """Save ``state`` if it enters the top-k; delete the checkpoint it pushes out."""
        if not self.would_keep(metric):
            return None
        name = f"epoch{epoch:04d}_ap{metric:.4f}.pt"
        path = self.directory / name
        save_checkpoint(state, path)
        self.entries.append({"metric": float(metric), "epoch": int(epoch), "file": name})
        self.entries.sort(key=lambda e: (-e["metric"], e["epoch"]))
        while len(self.entries) > self.k:
            dropped = self.entries.pop()
            try:
                (self.directory / dropped["file"]).unlink()
            except FileNotFoundError:
                pass
        return path

    def state_dict(self) -> dict:
        return {"k": self.k, "entries": [dict(e) for e in self.entries]}

    def load_state_dict(self, state: dict) -> None:
        self.entries = [dict(e) for e in state["entries"]]
