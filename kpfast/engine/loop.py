"""The training step, ``train_one_epoch`` and ``validate`` (the shape of timm's train.py).

The step never waits for the device: nothing in it reads a tensor value on the host.

* Non-finite detection on the device: the loss is back-propagated with an upstream gradient of
  1 when it is finite and NaN otherwise, so a non-finite loss on any rank makes every gradient
  NaN; under DDP the gradient all-reduce carries that to every rank, which therefore agree
  without an extra (blocking) all-reduce. The global gradient norm (computed anyway for
  clipping) is then finite exactly when the step is good: ``ok = isfinite(grad_norm)``.
* Skipping on the device: the optimizers are fused (``kpfast.engine.optim``) and take
  ``found_inf = !ok``, skipping the parameter and state update in the kernel, as GradScaler does.
  BatchNorm running statistics, updated during the forward, are put back with
  ``torch.where(ok, new, backup)`` from a backup allocated once and refreshed by a copy every
  step (no per-step allocation; a few small element-wise kernels over the BN buffers — about
  0.1% of the parameters — instead of a clone and a host branch). The EMA update uses decay 1 on
  a skipped step.
* Counters and losses stay on the device: skipped-step counts and the sums of the loss and its
  terms over good steps are accumulated there and read (one transfer) every ``log_interval``
  steps, at the end of an epoch and before a checkpoint. Too many consecutive non-finite steps
  are therefore detected at the next reading, up to ``log_interval - 1`` steps late (those steps
  are skipped too, so the model is the same).
* Stop requests (SIGTERM, SIGINT) are a host flag checked every step in a single process; under
  DDP the ranks agree on them at the readings, where they all-reduce the flag.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from kpfast.data.normalize import prepare_images
from kpfast.engine import runtime as dist_utils
from kpfast.engine.checkpointer import TrainState
from kpfast.inference import autocast_context

__all__ = ["TrainStep", "StepReading", "TrainingDiverged", "train_one_epoch", "validate"]


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


@dataclass
class StepReading:
    """Host values read from the step's device accumulators (one transfer)."""

    sums: dict  # term -> sum over the good steps since the previous reading
    count: int  # good steps since the previous reading
    skipped_total: int
    consecutive: int  # non-finite steps in a row, up to the last step
    worst_consecutive: int  # the longest such run since the previous reading

    def means(self) -> dict:
        if self.count == 0:
            return {name: float("nan") for name in self.sums}
        return {name: value / self.count for name, value in self.sums.items()}


class TrainStep:
    """One optimizer step (forward, loss, backward, clip, update) without a host sync."""

    def __init__(self, model: torch.nn.Module, train_model: torch.nn.Module, objective, optimizer, scaler,
                 ema=None, *, device: torch.device, grad_clip: float | None = None, precision: str = "fp32",
                 channels_last: bool = False, photometric=None):
        self.model = model  # the plain module (buffers, parameters)
        self.train_model = train_model  # what runs the forward (DDP / compiled wrapper)
        self.objective = objective
        self.optimizer = optimizer
        self.scaler = scaler
        self.ema = ema
        self.device = device
        self.max_norm = float("inf") if grad_clip is None else float(grad_clip)
        self.precision = precision
        self.channels_last = channels_last
        # data.decode_device: cuda: the training set's device-side photometric augmentation.
        self.photometric = photometric
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.buffers = [b for b in model.buffers()]
        self.buffer_backup = [b.detach().clone() for b in self.buffers]  # allocated once
        self.skipped_total = torch.zeros((), dtype=torch.int64, device=device)
        self.consecutive = torch.zeros((), dtype=torch.int64, device=device)
        self.worst_consecutive = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_count = torch.zeros((), dtype=torch.int64, device=device)
        self.term_names: list[str] | None = None
        self.loss_sums: torch.Tensor | None = None

    def load_counters(self, skipped_total: int, consecutive: int) -> None:
        """Continue the non-finite counters of a resumed run."""
        self.skipped_total.fill_(int(skipped_total))
        self.consecutive.fill_(int(consecutive))
        self.worst_consecutive.fill_(int(consecutive))

    def to_device(self, batch: dict) -> dict:
        """The tensors the step needs, each copied to the device once (asynchronously from pinned memory)."""
        if "encoded" in batch:  # data.decode_device: cuda: the images are made on the device
            from kpfast.data.gpu_pipeline import materialize_batch

            batch = materialize_batch(batch, self.device, photometric=self.photometric)
        # uint8 crops cross the copy and are normalised here, on the device (kpfast/data/normalize.py).
        moved = {"image": prepare_images(batch["image"], self.device, self.channels_last)}
        for key in ("keypoints", "weights", "visibility"):
            if key in batch and torch.is_tensor(batch[key]):
                moved[key] = batch[key].to(self.device, non_blocking=True)
        return moved

    def __call__(self, batch: dict) -> None:
        batch = self.to_device(batch)
        self.train_model.train()
        with autocast_context(self.device, self.precision):
            outputs = self.train_model(batch["image"])
        loss, parts = self.objective(outputs, batch)
        finite = torch.isfinite(loss)
        # NaN upstream gradient for a non-finite loss: every gradient becomes NaN, here and,
        # through DDP's gradient all-reduce, on every other rank.
        upstream = torch.where(finite, 1.0, float("nan")).to(loss.dtype)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(upstream)
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.max_norm, foreach=True)
        ok = torch.isfinite(grad_norm)
        if self.scaler.is_enabled():
            self.scaler.step(self.optimizer)  # fused optimizer: found_inf handled on the device
            self.scaler.update()
        else:
            self.optimizer.found_inf = (~ok).float()
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            for buffer, backup in zip(self.buffers, self.buffer_backup):
                torch.where(ok, buffer, backup, out=buffer)
            if self.buffers:
                torch._foreach_copy_(self.buffer_backup, self.buffers)
            if self.ema is not None:
                self.ema.update(self.model, ok)
            self._accumulate(ok, loss, parts)

    def _accumulate(self, ok: torch.Tensor, loss: torch.Tensor, parts: dict) -> None:
        if self.term_names is None:
            self.term_names = ["loss", *parts]
            self.loss_sums = torch.zeros(len(self.term_names), dtype=torch.float64, device=self.device)
        values = torch.stack([loss.detach().double(), *(parts[name].detach().double() for name in self.term_names[1:])])
        self.loss_sums += torch.where(ok, values, 0.0)
        self.loss_count += ok.long()
        self.consecutive.copy_(torch.where(ok, 0, self.consecutive + 1))
        self.skipped_total += (~ok).long()
        torch.maximum(self.worst_consecutive, self.consecutive, out=self.worst_consecutive)

    def read(self) -> StepReading:
        """Read and reset the interval accumulators: the one host-device transfer, at log points."""
        sums = self.loss_sums if self.loss_sums is not None else torch.zeros(0, dtype=torch.float64, device=self.device)
        counters = torch.stack([self.loss_count, self.skipped_total, self.consecutive, self.worst_consecutive])
        values = torch.cat([sums, counters.double()]).tolist()
        count, skipped, consecutive, worst = (int(v) for v in values[len(sums):])
        reading = StepReading(dict(zip(self.term_names or [], values[: len(sums)])), count, skipped, consecutive, worst)
        sums.zero_()
        self.loss_count.zero_()
        self.worst_consecutive.copy_(self.consecutive)
        return reading


def _record(state: TrainState, reading: StepReading, max_consecutive: int) -> None:
    """Fold a reading into the run state; raise when the run diverged."""
    for name, value in reading.sums.items():
        state.epoch_loss_sums[name] = state.epoch_loss_sums.get(name, 0.0) + value
    state.epoch_loss_count += reading.count
    state.nonfinite_total = reading.skipped_total
    state.nonfinite_consecutive = reading.consecutive
    if reading.worst_consecutive >= max_consecutive:
        raise TrainingDiverged(
            f"{reading.worst_consecutive} consecutive steps with a non-finite loss or gradient "
            f"(limit train.max_consecutive_nonfinite={max_consecutive}, {reading.skipped_total} skipped in "
            f"total); lower optim.lr, enable optim.grad_clip or use train.precision=fp32"
        )


def train_one_epoch(step: TrainStep, loader, state: TrainState, scheduler, *, steps_per_epoch: int,
                    log_interval: int, max_consecutive_nonfinite: int, stop_requested: Callable[[], bool],
                    max_steps: int | None = None, progress=None, writer=None) -> bool:
    """Train over ``loader`` (the rest of the current epoch); True when stopped before its end
    or exactly at it by a stop request or ``max_steps`` (steps of this call)."""
    distributed = dist_utils.is_distributed()
    steps = 0
    tick = time.perf_counter()
    for batch in loader:
        data_time = time.perf_counter() - tick
        step(batch)
        scheduler.step()
        state.batch_in_epoch += 1
        state.global_step += 1
        steps += 1
        lr = float(step.optimizer.param_groups[0]["lr"])
        max_reached = max_steps is not None and steps >= max_steps
        at_reading = state.batch_in_epoch % log_interval == 0 or state.batch_in_epoch >= steps_per_epoch
        stop = False
        loss = None
        if at_reading or max_reached or (not distributed and stop_requested()):
            reading = step.read()
            _record(state, reading, max_consecutive_nonfinite)
            means = reading.means()
            loss = means.get("loss")
            if writer is not None and reading.count > 0:
                for name, value in means.items():
                    writer.add_scalar("train/loss" if name == "loss" else f"train/loss_{name}", value,
                                      state.global_step)
                writer.add_scalar("train/lr", lr, state.global_step)
            stop = stop_requested()
            if distributed and at_reading:
                stop = dist_utils.any_across_ranks(stop)[0]
            elif distributed:
                stop = False  # ranks agree on stop requests at readings only
        if progress is not None:
            progress.update(loss=loss, lr=lr, data_time=data_time, step_time=time.perf_counter() - tick)
        if stop or max_reached:
            return True
        tick = time.perf_counter()
    return False


def validate(evaluator, model: torch.nn.Module, epoch: int, *, log: Callable[[str], None] | None = None,
             writer=None, pck_threshold: float | None = None) -> dict:
    """COCO AP (and PCK) of ``model``; logged and written to TensorBoard on the main process."""
    metrics = evaluator(model)
    if log is not None:
        log(
            f"epoch {epoch}: AP {metrics['AP']:.4f} AP50 {metrics['AP50']:.4f} AP75 {metrics['AP75']:.4f} "
            f"AR {metrics['AR']:.4f}"
            + (f" PCK@{pck_threshold:g} {metrics['PCK']:.4f} EPE {metrics['EPE']:.2f}px" if "PCK" in metrics else "")
        )
    if writer is not None:
        for key, value in metrics.items():
            if isinstance(value, (int, float)):
                writer.add_scalar(f"val/{key}", value, epoch)
    return metrics
