"""The training run's progress: one dataclass that checkpoints save and resume restores.

Every field here is written into ``last.pt`` (at the top level, beside the model/optimizer
states) by :meth:`TrainState.to_dict` and read back by :meth:`TrainState.from_dict`; adding a
field is the only change needed for it to survive an interruption.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

__all__ = ["TrainState"]


@dataclass
class TrainState:
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
