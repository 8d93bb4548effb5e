"""Where a resumed run writes: its own run folder, or a new one (docs/files.md, "Resume").

A run folder holds a marker file (:data:`RUN_MARKER`) with the run's id, and every checkpoint
of the run records the same id. ``--resume CKPT`` continues **in place** only when CKPT is the
run's own newest checkpoint inside the folder of the run that wrote it:

* ``last.pt`` of a folder whose marker holds the checkpoint's run id; or
* when that folder has no ``last.pt`` yet (a kill during the first write of it), ``best.pt`` or a
  top-k file of the same run that no other checkpoint of the run is newer than.

Anything else (best.pt or a top-k file behind the run's last.pt, a last.pt copied into another
folder, a checkpoint of an older kpfast without a run id) starts a **new** run folder from that
checkpoint's state, so no existing file is rewound, replaced or deleted.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUN_MARKER", "ResumePlan", "plan_resume", "read_run_id", "write_run_marker"]

RUN_MARKER = ".kpfast-run"
_TOPK_EPOCH = re.compile(r"epoch(\d{4,})_ap\d+\.\d{4}\.pt")
_MAX_MARKER_BYTES = 256


@dataclass(frozen=True)
class ResumePlan:
    checkpoint: Path
    run_dir: Path | None  # the folder to continue in; None: a new run
    reason: str = ""  # why a new run (empty when continuing in place)

    @property
    def in_place(self) -> bool:
        return self.run_dir is not None


def write_run_marker(run_dir: Path) -> str:
    """Give a freshly created run folder its id (written atomically) and return it."""
    from kpfast.engine.checkpoint import atomic_write_bytes

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


def _owner_folder(checkpoint: Path) -> Path:
    return checkpoint.parent.parent if checkpoint.parent.name == "topk" else checkpoint.parent


def _newer_checkpoint(run_dir: Path, checkpoint: Path, epoch: int) -> Path | None:
    """A checkpoint of ``run_dir`` with more completed epochs than ``epoch``, if any."""
    topk = run_dir / "topk"
    if topk.is_dir():
        for path in topk.iterdir():
            match = _TOPK_EPOCH.fullmatch(path.name)
            if match and int(match.group(1)) > epoch and path.is_file():
                return path
    best = run_dir / "best.pt"
    if best.is_file() and best != checkpoint:
        from kpfast.engine.checkpoint import CheckpointError, load_checkpoint

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
