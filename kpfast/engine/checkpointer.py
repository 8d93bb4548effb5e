"""Which checkpoint files a run keeps (last, best, top-k) and the rules that make them safe.

The checkpointer only ever writes, replaces or deletes files it names itself inside its run
directory: ``last.pt``, ``best.pt``, ``topk/epochNNNN_apX.XXXX.pt`` and the temporary files of
their atomic writes (``.NAME.*.tmp``). Top-k entries read back from a checkpoint are plain
basenames that must be exactly the name this class gives that (epoch, metric); anything else
(a path, ``..``, another file name) is refused, so a crafted checkpoint cannot make a resumed
run delete a file elsewhere.

Write order per epoch: best/top-k first, then ``last.pt`` (then the caller's metrics.csv), so
that a crash never leaves ``last.pt`` referring to a top-k file that does not exist; on resume
:meth:`Checkpointer.reconcile` removes top-k files of epochs later than the resumed one (a crash
after they were written and before ``last.pt``), which the resumed run writes again.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from kpfast.engine.checkpoint import save_checkpoint
from kpfast.engine.state import TrainState

__all__ = ["Checkpointer", "topk_file_name", "TOPK_DIR"]

TOPK_DIR = "topk"
_TOPK_NAME = re.compile(r"epoch(\d{4,})_ap(\d+\.\d{4})\.pt")
_OWN_FILES = ("last.pt", "best.pt")
# Temporary files of kpfast.engine.checkpoint.atomic_write_bytes: ".<name>.<mkstemp suffix>.tmp".
_TEMP_NAME = re.compile(r"\.(last\.pt|best\.pt|metrics\.csv|config\.yaml|results\.png|val_predictions\.jpg|"
                        r"epoch\d{4,}_ap\d+\.\d{4}\.pt)\.[A-Za-z0-9_]+\.tmp")


def topk_file_name(epoch: int, metric: float) -> str:
    return f"epoch{int(epoch):04d}_ap{float(metric):.4f}.pt"


class Checkpointer:
    """Owns ``last.pt``, ``best.pt`` and the top-k folder of one run directory."""

    def __init__(self, run_dir: Path | str, top_k: int, is_main: bool = True):
        if top_k < 0:
            raise ValueError(f"train.top_k: expected >= 0, got {top_k}")
        self.run_dir = Path(run_dir)
        self.topk_dir = self.run_dir / TOPK_DIR
        self.top_k = top_k
        self.is_main = is_main

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

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
    def save_last(self, payload: dict) -> None:
        if self.is_main:
            save_checkpoint(payload, self.last_path)

    def would_keep(self, state: TrainState, metric: float) -> bool:
        if self.top_k == 0:
            return False
        return len(state.topk) < self.top_k or metric > min(e["metric"] for e in state.topk)

    def save_evaluated(self, state: TrainState, metric: float, improved: bool, make_payload) -> None:
        """Write best.pt (when ``improved``) and the top-k entry for ``state.epoch``.

        ``make_payload()`` builds the checkpoint dict; it is called only when something is
        written. ``state.topk`` is updated (and a file pushed out of the top-k deleted) first, so
        that the payload records the list as it is after this epoch.
        """
        keep = self.would_keep(state, metric)
        if not self.is_main or not (improved or keep):
            if keep:  # other ranks track the same list
                self._add_entry(state, metric, delete=False)
            return
        name = self._add_entry(state, metric, delete=True) if keep else None
        payload = make_payload()
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
