"""Atomic checkpoint files, RNG-state capture and restore, top-k bookkeeping.

Every write goes to a temporary file in the destination directory, is fsync'ed, and then
renamed over the destination with ``os.replace``; a crash or exception at any point leaves the
previous file intact. Checkpoints hold only tensors and primitive containers so that they load
with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import random
import zipfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_write_bytes",
    "check_resume_compatible",
    "save_checkpoint",
    "load_checkpoint",
    "load_training_checkpoint",
    "capture_rng_state",
    "check_declared_sizes",
    "restore_rng_state",
]


class CheckpointError(ValueError):
    """A file is not a readable kpfast checkpoint, or does not fit the requested run."""


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
        if isinstance(exc, OSError) and not isinstance(exc, CheckpointWriteError):
            reason = exc.strerror or str(exc)
            hint = "free some space or pass another --output_dir" if exc.errno in (errno.ENOSPC, errno.EDQUOT) \
                else "check that the directory exists and is writable"
            raise CheckpointWriteError(
                exc.errno, f"cannot write {path}: {reason}; {hint} (any previous {path.name} is unchanged)"
            ) from exc
        raise
    _fsync_dir(path.parent)


class CheckpointWriteError(OSError):
    """An atomic write failed; ``str()`` is one line naming the file and what to do."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def save_checkpoint(state: dict, path: Path | str) -> None:
    """Serialise ``state`` with torch.save into memory, then write it atomically to ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path | str, map_location: Any = "cpu", *, require_config: bool = False) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    Anything else (an empty, truncated or text file, a pickle holding code, a bare model
    ``state_dict``) raises :class:`CheckpointError`, one line naming the file and what it is.
    ``require_config=True`` (what the CLIs use, via :func:`load_training_checkpoint`) also
    requires the stored config of a kpfast training state.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory; pass the .pt file (e.g. {path / 'last.pt'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"not a kpfast checkpoint: {path} is empty (an interrupted copy?)")
    check_declared_sizes(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only load failed" in str(exc).lower() or "weights_only" in str(exc):
            raise CheckpointError(
                f"refusing {path}: it holds objects other than tensors and plain containers "
                "(loaded with weights_only=True; kpfast checkpoints never do)"
            ) from None
        raise CheckpointError(f"not a kpfast checkpoint: {path} is not a torch.save file") from None
    except PermissionError:
        raise
    except (OSError, RuntimeError, EOFError, KeyError, ValueError, IndexError, zipfile.BadZipFile,
            UnicodeDecodeError):  # what torch.load raises on truncated or foreign bytes varies by version
        raise CheckpointError(
            f"not a kpfast checkpoint: {path} is truncated or not a torch.save file "
            f"({path.stat().st_size} bytes); use last.pt or best.pt of a kpfast run"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"not a kpfast checkpoint: {path} holds a {type(state).__name__}, not a mapping")
    if require_config and "config" not in state:
        bare = state and all(isinstance(v, torch.Tensor) for v in state.values())
        what = " (a bare state_dict?)" if bare else ""
        raise CheckpointError(
            f"not a kpfast checkpoint: {path} has no 'config'{what}; use last.pt or best.pt of a kpfast run"
        )
    return state


def check_declared_sizes(path: Path) -> None:
    """Refuse, before torch.load allocates anything, a zip checkpoint whose records are compressed
    or declare more bytes than the file holds.

    torch.save stores records uncompressed, so a checkpoint's tensors can never need more memory
    than the file's size; a DEFLATE-compressed record is how a 390 KB file asks for 400 MB (or
    40 MB for 40 GB) when torch.load inflates it. Legacy (non-zip) files read every storage from
    the file itself, so their sizes are bounded by the file already."""
    size = path.stat().st_size
    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return  # torch.load reports what is wrong with the file
    compressed = [r.filename for r in records if r.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(
            f"refusing {path}: {len(compressed)} record(s) are compressed (e.g. {compressed[0]}); torch.save "
            "never compresses, and a compressed record can inflate far beyond the file's size")
    declared = sum(r.file_size for r in records)
    if declared > size:
        raise CheckpointError(f"refusing {path}: its records declare {declared} bytes but the file holds {size}; "
                              "truncated or crafted")


def load_training_checkpoint(path: Path | str, map_location: Any = "cpu") -> dict:
    """A kpfast training state (last.pt, best.pt, a top-k file): like :func:`load_checkpoint`,
    and refuses a file without the stored config (e.g. a bare model state_dict) in one line."""
    return load_checkpoint(path, map_location, require_config=True)


def _flatten(config: dict) -> dict:
    """{"model": {"name": ...}} -> {"model.name": ...} (one level: sections hold the fields)."""
    out = {}
    for section, fields in config.items():
        if isinstance(fields, dict):
            for key, value in fields.items():
                out[f"{section}.{key}"] = value
    return out


def check_resume_compatible(stored_config: dict | Any, config: Any) -> None:
    """Raise :class:`CheckpointError` naming every key marked ``MUST_MATCH`` in the config schema
    (``Config.resume_keys()``, kpfast/engine/config.py) whose value differs between the
    checkpoint's stored config (a plain mapping or a Config) and the requested Config, before any
    state is loaded."""
    keys = type(config).resume_keys()
    if not isinstance(stored_config, dict):
        stored_config = stored_config.model_dump()
    stored, wanted = _flatten(stored_config), _flatten(config.model_dump())
    missing = object()
    differing = []
    for key in keys:
        old, new = stored.get(key, missing), wanted.get(key, missing)
        if old is missing or new is missing:
            continue
        if _normalise(old) != _normalise(new):
            differing.append(f"{key} ({old!r} in the checkpoint, {new!r} requested)")
    if differing:
        raise CheckpointError(
            "cannot resume: the checkpoint was trained with a different " + "; ".join(differing)
            + ". Resume without changing these keys (drop --config to use the stored config) or start a new run"
        )


def _normalise(value):
    if isinstance(value, tuple):
        value = list(value)
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    return value


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
