"""A training run's checkpoints: what they hold, how they are written and read, which files a
run keeps, and where a resumed run continues (docs/files.md "Training", docs/engine.md "Files
the trainer writes and deletes").

One :class:`Checkpointer` per run. Its API, in the order a run uses it:

* :func:`load_checkpoint` / :func:`load_training_checkpoint` read a file (``weights_only=True``,
  sizes checked before anything is allocated), :func:`check_resume_compatible` compares its
  config with the requested one, :func:`plan_resume` decides whether the run continues in its
  own folder or starts a new one;
* :func:`model_from_checkpoint` rebuilds a checkpoint's network and loads its (EMA) weights, or
  names in one line what does not fit;
* :meth:`Checkpointer.restore` puts a loaded checkpoint back into the run's
  :class:`TrainingParts` and returns its :class:`TrainState` (top-k list checked, stale files of
  an in-place resume removed, RNG states restored for an exact resume);
* :meth:`Checkpointer.save_evaluated` writes ``best.pt`` and the top-k file of an evaluated
  epoch, :meth:`Checkpointer.save_last` writes ``last.pt`` (every rank calls it: the RNG states
  of all ranks are gathered).

Every write is atomic (:func:`kpfast.outputs.atomic_write_bytes`). Checkpoints hold only
tensors and primitive containers so that they load with ``torch.load(..., weights_only=True)``.

Files: the checkpointer only ever writes, replaces or deletes files it names itself inside its
run directory: ``last.pt``, ``best.pt``, ``topk/epochNNNN_apX.XXXX.pt`` and the temporary files
of their atomic writes (``.NAME.*.tmp``). Top-k entries read back from a checkpoint are plain
basenames that must be exactly the name this module gives that (epoch, metric); anything else
(a path, ``..``, another file name) is refused, so a crafted checkpoint cannot make a resumed
run delete a file elsewhere.

Write order per epoch: best/top-k first, then ``last.pt`` (then the caller's metrics.csv), so
that a crash never leaves ``last.pt`` referring to a top-k file that does not exist; on resume
:meth:`Checkpointer.reconcile` removes top-k files of epochs later than the resumed one (a crash
after they were written and before ``last.pt``), which the resumed run writes again.

Where a resumed run writes: a run folder holds a marker file (:data:`kpfast.outputs.RUN_MARKER`)
with the run's id, and every checkpoint of the run records the same id. ``--resume CKPT``
continues **in place** only when CKPT is the run's own newest checkpoint inside the folder of
the run that wrote it:

* ``last.pt`` of a folder whose marker holds the checkpoint's run id; or
* when that folder has no ``last.pt`` yet (a kill during the first write of it), ``best.pt`` or a
  top-k file of the same run that no other checkpoint of the run is newer than.

Anything else (best.pt or a top-k file behind the run's last.pt, a last.pt copied into another
folder, a checkpoint of an older kpfast without a run id) starts a **new** run folder from that
checkpoint's state, so no existing file is rewound, replaced or deleted.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import pickle
import random
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kpfast.engine.config import config_to_dict
from kpfast.engine.rundir import read_run_id
from kpfast.engine.runtime import all_gather_objects, unwrap_model
from kpfast.outputs import atomic_write_bytes

__all__ = [
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "Checkpointer",
    "ResumePlan",
    "TOPK_DIR",
    "TrainState",
    "TrainingParts",
    "capture_rng_state",
    "check_declared_sizes",
    "check_weights_fit",
    "check_resume_compatible",
    "dataset_info_record",
    "load_checkpoint",
    "load_training_checkpoint",
    "model_from_checkpoint",
    "plan_resume",
    "resolve_resume",
    "restore_rng_state",
    "save_checkpoint",
    "topk_file_name",
]

CHECKPOINT_VERSION = 2
# The only names the checkpointer writes or deletes besides last.pt and best.pt (module doc).
TOPK_DIR = "topk"
_TOPK_NAME = re.compile(r"epoch(\d{4,})_ap(\d+\.\d{4})\.pt")
# Temporary files of kpfast.outputs.atomic_write_bytes: ".<name>.<mkstemp suffix>.tmp".
_TEMP_NAME = re.compile(r"\.(last\.pt|best\.pt|metrics\.csv|config\.yaml|results\.png|val_predictions\.jpg|"
                        r"epoch\d{4,}_ap\d+\.\d{4}\.pt)\.[A-Za-z0-9_]+\.tmp")


def topk_file_name(epoch: int, metric: float) -> str:
    return f"epoch{int(epoch):04d}_ap{float(metric):.4f}.pt"


class CheckpointError(ValueError):
    """A file is not a readable kpfast checkpoint, or does not fit the requested run."""


# --------------------------------------------------------------------------- what a checkpoint holds


@dataclass
class TrainState:
    """The run's progress. Every field is written into a checkpoint (at the top level, beside the
    parts' states) by :meth:`to_dict` and read back by :meth:`from_dict`; adding a field is the
    only change needed for it to survive an interruption."""

    epoch: int = 0  # completed epochs
    batch_in_epoch: int = 0  # optimizer steps already taken in the current epoch
    global_step: int = 0
    nonfinite_total: int = 0  # skipped (non-finite) steps over the whole run
    nonfinite_consecutive: int = 0
    # Running sums of the current epoch's losses over its non-skipped steps, so that a run
    # resumed mid-epoch reports the same epoch average as an uninterrupted one.
    epoch_loss_sums: dict = field(default_factory=dict)
    epoch_loss_count: int = 0
    # Early stopping on validation AP.
    best_ap: float | None = None
    best_epoch: int | None = None
    evals_without_improvement: int = 0
    stopped_early: bool = False
    # Top-k checkpoints: [{"metric", "epoch", "file"}], best first (file: a basename in topk/).
    topk: list = field(default_factory=list)
    history: list = field(default_factory=list)  # one metrics row per completed epoch

    def to_dict(self) -> dict:
        return copy.deepcopy(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainState":
        """The state stored in a checkpoint; a missing field is a clear error naming it."""
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                raise ValueError(f"resume: checkpoint has no '{f.name}' (not a kpfast last.pt of this version?)")
            values[f.name] = copy.deepcopy(data[f.name])
        return cls(**values)


@dataclass
class TrainingParts:
    """The objects whose states a checkpoint holds beside the :class:`TrainState` and the RNG
    states (``ema`` is None when train.ema is off)."""

    model: torch.nn.Module
    optimizer: Any
    scheduler: Any
    scaler: Any
    ema: Any = None

    def state_dicts(self) -> dict:
        return {
            "model": unwrap_model(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }

    def load_state_dicts(self, saved: dict) -> None:
        unwrap_model(self.model).load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            if saved["ema"] is None:
                raise ValueError("resume: train.ema is on but the checkpoint has no EMA state")
            self.ema.load_state_dict(saved["ema"])


def dataset_info_record(info) -> dict:
    """The dataset's keypoint metadata as plain lists, stored so that eval/predict/export work
    from a checkpoint alone."""
    return {
        "keypoint_names": list(info.keypoint_names),
        "flip_pairs": [list(p) for p in info.flip_pairs],
        "skeleton": [list(p) for p in info.skeleton],
        "sigmas": [float(s) for s in info.sigmas],
    }


# --------------------------------------------------------------------------- files

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


def model_from_checkpoint(state: dict, config, weights: str = "auto") -> torch.nn.Module:
    """Rebuild the network of a checkpoint and load its weights (EMA ones when asked/auto).

    Weights that do not fit the config's network (another model, other overrides, a foreign
    state dict) are one CheckpointError naming what differs, before anything is loaded."""
    model = config.model.build()
    ema = state.get("ema")
    if weights == "ema" and ema is None:
        raise ValueError("weights: 'ema' requested but the checkpoint has no EMA weights")
    if weights in ("auto", "ema") and ema is not None:
        stored, what = (ema.get("module") if isinstance(ema, dict) else None), "EMA weights"
    else:
        stored, what = state.get("model"), "weights"
    check_weights_fit(model, stored, what, config)
    model.load_state_dict(stored)
    return model


def check_weights_fit(model: torch.nn.Module, stored, what: str, config) -> None:
    """Raise CheckpointError (one line) unless ``stored`` has exactly ``model``'s tensors and shapes."""
    hint = (f"the checkpoint's {what} do not fit model {config.model.name!r} with overrides "
            f"{config.model.overrides or {}} (num_keypoints={config.model.num_keypoints}); drop --config/--set "
            "model.* to use the checkpoint's stored config, or pass the checkpoint these settings trained")
    if not isinstance(stored, dict) or not all(isinstance(v, torch.Tensor) for v in stored.values()):
        raise CheckpointError(f"{hint}: they are not a mapping of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    shapes = [k for k in expected if k in stored and tuple(stored[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} of another shape (e.g. {k}: {tuple(stored[k].shape)} stored, "
                        f"{tuple(expected[k].shape)} expected)")
    if problems:
        raise CheckpointError(f"{hint}: {'; '.join(problems)}")


# --------------------------------------------------------------------------- resume


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


@dataclass(frozen=True)
class ResumePlan:
    checkpoint: Path
    run_dir: Path | None  # the folder to continue in; None: a new run
    reason: str = ""  # why a new run (empty when continuing in place)

    @property
    def in_place(self) -> bool:
        return self.run_dir is not None


def _owner_folder(checkpoint: Path) -> Path:
    return checkpoint.parent.parent if checkpoint.parent.name == TOPK_DIR else checkpoint.parent


def _newer_checkpoint(run_dir: Path, checkpoint: Path, epoch: int) -> Path | None:
    """A checkpoint of ``run_dir`` with more completed epochs than ``epoch``, if any."""
    topk = run_dir / TOPK_DIR
    if topk.is_dir():
        for path in topk.iterdir():
            match = _TOPK_NAME.fullmatch(path.name)
            if match and int(match.group(1)) > epoch and path.is_file():
                return path
    best = run_dir / "best.pt"
    if best.is_file() and best != checkpoint:
        try:
            if int(load_checkpoint(best).get("epoch", -1)) > epoch:
                return best
        except (CheckpointError, TypeError, ValueError):
            pass  # an unreadable best.pt cannot be resumed from either
    return None


def plan_resume(checkpoint: Path | str, saved: dict) -> ResumePlan:
    """Decide where resuming from ``checkpoint`` (already loaded as ``saved``) writes."""
    checkpoint = Path(checkpoint).resolve()
    run_dir = _owner_folder(checkpoint)
    run_id = saved.get("run_id")
    if not isinstance(run_id, str):
        return ResumePlan(checkpoint, None, f"{checkpoint.name} records no run id (an older kpfast?)")
    if read_run_id(run_dir) != run_id:
        return ResumePlan(checkpoint, None, f"{run_dir} is not the folder of the run that wrote it")
    if checkpoint.name == "last.pt" and checkpoint.parent == run_dir:
        return ResumePlan(checkpoint, run_dir)
    if (run_dir / "last.pt").exists():
        return ResumePlan(checkpoint, None,
                          f"{run_dir / 'last.pt'} is that run's newest checkpoint (resume from it to continue the run)")
    epoch = saved.get("epoch")
    if not isinstance(epoch, int):
        return ResumePlan(checkpoint, None, f"{checkpoint.name} records no epoch")
    newer = _newer_checkpoint(run_dir, checkpoint, epoch)
    if newer is not None:
        return ResumePlan(checkpoint, None, f"{newer} is newer")
    return ResumePlan(checkpoint, run_dir)


def resolve_resume(resume: str | Path) -> Path:
    """The checkpoint ``--resume`` names: a file, or a run folder's ``last.pt``."""
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


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


# --------------------------------------------------------------------------- the run's checkpoint files

class Checkpointer:
    """Owns the checkpoints of one run directory: what they hold (``parts``, ``config``, the
    run's :class:`TrainState`, RNG states), ``last.pt``, ``best.pt``, the top-k folder, and the
    restore of a resumed run (module doc).

    ``config`` is the run's typed config (stored resolved, so that a checkpoint alone
    reproduces the run), ``dataset_info`` its keypoint metadata. Only rank 0 (``is_main``)
    writes or deletes files; every rank keeps the same top-k list.
    """

    def __init__(self, run_dir: Path | str, top_k: int, is_main: bool = True, *, parts: TrainingParts | None = None,
                 config: Any = None, dataset_info: Any = None, run_id: str | None = None, world_size: int = 1,
                 rank: int = 0):
        if top_k < 0:
            raise ValueError(f"train.top_k: expected >= 0, got {top_k}")
        self.run_dir = Path(run_dir)
        self.topk_dir = self.run_dir / TOPK_DIR
        self.top_k = top_k
        self.is_main = is_main
        self.parts = parts
        self.config = config
        self.dataset_info = dataset_info
        self.run_id = run_id
        self.world_size = world_size
        self.rank = rank

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    # ------------------------------------------------------------------ what a checkpoint holds
    def payload(self, state: TrainState, rng_states: list[dict] | None = None) -> dict:
        """Everything needed to resume; ``rng_states`` holds one entry per rank (default: this rank's)."""
        payload = {
            "version": CHECKPOINT_VERSION,
            "config": config_to_dict(self.config),
            **self.parts.state_dicts(),
            "rng": rng_states if rng_states is not None else [capture_rng_state()],
            "world_size": self.world_size,
            "run_id": self.run_id,
            "dataset_info": dataset_info_record(self.dataset_info),
        }
        payload.update(state.to_dict())
        return payload

    def restore(self, saved: dict, in_place: bool) -> TrainState:
        """Load a checkpoint's states into :attr:`parts` and this rank's RNGs; return its TrainState.

        ``in_place`` (:attr:`ResumePlan.in_place`): the run continues in its own folder, whose
        top-k files written after ``saved`` and stale temporary files are removed; otherwise the
        listed top-k files belong to the run resumed from and the new run starts its own list.
        Hostile top-k names are refused before anything is loaded or deleted.
        """
        if saved.get("world_size", 1) != self.world_size:
            raise ValueError(
                f"resume: checkpoint was written with world_size={saved.get('world_size')} but this run has "
                f"world_size={self.world_size}; the data order would differ"
            )
        state = TrainState.from_dict(saved)
        if in_place:
            self.reconcile(state)
        else:
            self.validate_topk(state.topk)
            state.topk = []
        rng_states = saved["rng"]
        if len(rng_states) != self.world_size:
            raise ValueError(f"resume: checkpoint holds {len(rng_states)} RNG states for world size {self.world_size}")
        self.parts.load_state_dicts(saved)
        restore_rng_state(rng_states[self.rank])
        return state

    # ------------------------------------------------------------------ resume
    def validate_topk(self, entries) -> list[dict]:
        """Top-k entries from a checkpoint, each checked to name a file this class would write."""
        if not isinstance(entries, list):
            raise ValueError(f"resume: checkpoint top-k list is a {type(entries).__name__}, expected a list")
        checked = []
        for entry in entries:
            if not isinstance(entry, dict) or set(entry) != {"metric", "epoch", "file"}:
                raise ValueError(f"resume: malformed top-k entry {entry!r} in the checkpoint; refusing to resume")
            name, epoch, metric = entry["file"], entry["epoch"], entry["metric"]
            ok = (isinstance(name, str) and isinstance(epoch, int) and not isinstance(epoch, bool)
                  and isinstance(metric, float) and math.isfinite(metric)
                  and _TOPK_NAME.fullmatch(name) is not None and name == topk_file_name(epoch, metric))
            if not ok:
                raise ValueError(
                    f"resume: top-k entry {name!r} in the checkpoint is not a file name this trainer writes "
                    f"(expected '{TOPK_DIR}/epochNNNN_apX.XXXX.pt' matching its epoch and AP); refusing to "
                    f"resume a checkpoint that could make it delete other files")
            checked.append({"metric": float(metric), "epoch": int(epoch), "file": name})
        return checked

    def remove_stale_temp_files(self) -> list[Path]:
        """Delete temporary files left by a killed atomic write (our own names, this run only)."""
        removed = []
        if not self.is_main:
            return removed
        for folder in (self.run_dir, self.topk_dir):
            if not folder.is_dir():
                continue
            for path in folder.iterdir():
                if _TEMP_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                    path.unlink()
                    removed.append(path)
        return removed

    def reconcile(self, state: TrainState) -> list[Path]:
        """After resuming at ``state``: drop top-k files written after that state's ``last.pt``."""
        state.topk = self.validate_topk(state.topk)
        removed = self.remove_stale_temp_files()
        if not self.is_main or not self.topk_dir.is_dir():
            return removed
        kept = {entry["file"] for entry in state.topk}
        for path in self.topk_dir.iterdir():
            match = _TOPK_NAME.fullmatch(path.name)
            if match and path.name not in kept and int(match.group(1)) > state.epoch and path.is_file():
                path.unlink()
                removed.append(path)
        return removed

    # ------------------------------------------------------------------ saving
    def save_last(self, state: TrainState) -> None:
        """Write last.pt (rank 0). Every rank must call this: RNG states are gathered from all."""
        rng_states = all_gather_objects(capture_rng_state())
        if self.is_main:
            save_checkpoint(self.payload(state, rng_states), self.last_path)

    def would_keep(self, state: TrainState, metric: float) -> bool:
        if self.top_k == 0:
            return False
        return len(state.topk) < self.top_k or metric > min(e["metric"] for e in state.topk)

    def save_evaluated(self, state: TrainState, metric: float, improved: bool, metrics: dict) -> None:
        """Write best.pt (when ``improved``) and the top-k entry for ``state.epoch``; both hold the
        numeric ``metrics`` of the evaluation.

        The payload is built only when something is written. ``state.topk`` is updated (and a file
        pushed out of the top-k deleted) first, so that the payload records the list as it is
        after this epoch.
        """
        keep = self.would_keep(state, metric)
        if not self.is_main or not (improved or keep):
            if keep:  # other ranks track the same list
                self._add_entry(state, metric, delete=False)
            return
        name = self._add_entry(state, metric, delete=True) if keep else None
        payload = self.payload(state)
        payload["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if improved:
            save_checkpoint(payload, self.best_path)
        if name is not None:
            save_checkpoint(payload, self.topk_dir / name)

    def _add_entry(self, state: TrainState, metric: float, delete: bool) -> str:
        name = topk_file_name(state.epoch, metric)
        state.topk.append({"metric": float(metric), "epoch": int(state.epoch), "file": name})
        state.topk.sort(key=lambda e: (-e["metric"], e["epoch"]))
        while len(state.topk) > self.top_k:
            dropped = state.topk.pop()
            if delete:
                # The name was validated (or made here): a plain basename inside topk/.
                (self.topk_dir / topk_file_name(dropped["epoch"], dropped["metric"])).unlink(missing_ok=True)
        return name
