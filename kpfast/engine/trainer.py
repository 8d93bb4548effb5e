"""The training loop: DDP-aware, mixed precision, EMA, exact resume, early stopping, top-k.

Resume is exact at optimizer-step granularity: ``last.pt`` records the epoch and the number
of batches already consumed in it, every optimizer/scheduler/scaler/EMA state and all RNG
states; the data order is a pure function of (seed, epoch) and each sample's augmentation a
pure function of (seed, epoch, index) (see :mod:`kpfast.engine.sampling`), so a run stopped by
SIGINT/SIGTERM (or ``train.max_steps``) and resumed ends with bit-identical weights to an
uninterrupted run on the same machine and thread count.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from kpfast.data.loader import prepare_fork_for_workers
from kpfast.engine import distributed as dist_utils
from kpfast.engine.checkpoint import (
    TopKCheckpoints,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from kpfast.engine.config import Config, config_from_dict, config_to_dict, save_config
from kpfast.engine.ema import ModelEMA
from kpfast.engine.inference import autocast_context
from kpfast.engine.losses import TrainingObjective
from kpfast.engine.optim import build_optimizer, build_scheduler
from kpfast.engine.sampling import ResumableSampler, SeededDataset

__all__ = ["Trainer", "TrainingDiverged", "TrainResult", "select_device", "seed_everything"]

CHECKPOINT_VERSION = 1


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


@dataclass
class TrainResult:
    run_dir: Path
    epochs_completed: int
    global_step: int
    interrupted: bool
    stopped_early: bool
    best_ap: float | None
    final_metrics: dict = field(default_factory=dict)


def select_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            return torch.device("cuda", local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device: 'cuda' requested but CUDA is not available (got {name!r})")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_cpu_threads(config: Config, device: torch.device) -> int | None:
    """Set torch's intra-op threads for CPU training (see TrainConfig.cpu_threads)."""
    if device.type != "cpu":
        return None
    threads = config.train.cpu_threads
    if threads is None:
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, available_cores() // local_procs - config.data.workers)
    torch.set_num_threads(threads)
    return threads


def single_threaded_worker(_worker_id: int) -> None:
    """Data workers are one core's worth of work each: no torch thread pool inside."""
    torch.set_num_threads(1)


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (second SIGINT aborts)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        if not _in_main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class Trainer:
    """Builds everything from a :class:`Config` and runs training.

    ``components`` lets tests or other programs inject builders; by default they come from
    :mod:`kpfast.engine.builders` (kpfast.models / kpfast.data / kpfast.ops).
    """

    def __init__(self, config: Config, resume: str | Path | None = None, *, log: Callable[[str], None] | None = None):
        from kpfast.engine import builders

        self.config = config
        self.resume_path = resolve_resume(resume) if resume else None
        self.dist = dist_utils.init_distributed(select_device(config.train.device))
        self.device = select_device(config.train.device)
        self.is_main = self.dist.rank == 0
        self._log = log or (lambda text: print(text, flush=True))
        cfg = config
        self.cpu_threads = configure_cpu_threads(cfg, self.device)
        prepare_fork_for_workers(cfg.data.workers)

        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.train.seed + self.dist.rank)

        # Data -------------------------------------------------------------------------
        self.data = builders.build_data(cfg)
        self.dataset_info = self.data.info
        self.train_set = SeededDataset(self.data.train, seed=cfg.train.seed)
        self.sampler = ResumableSampler(
            len(self.train_set),
            cfg.train.batch_size,
            shuffle=True,
            seed=cfg.train.seed,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            drop_last=len(self.train_set) // self.dist.world_size > cfg.train.batch_size,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train.batch_size: {cfg.train.batch_size} leaves no batch for {len(self.train_set)} samples"
            )

        # Model / optimisation ------------------------------------------------------------
        model = builders.build_model(cfg.model).to(self.device)
        if cfg.model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.heatmap_size = builders.heatmap_size(cfg, model)
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch, cfg.train.epochs)
        use_scaler = cfg.train.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = ModelEMA(model, cfg.train.ema_decay) if cfg.train.ema else None
        self.objective = TrainingObjective(cfg.loss, self.heatmap_size, backend=cfg.train.ops_backend)
        self.train_model: torch.nn.Module = model
        if self.dist.world_size > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.model.compile:
            self.train_model = torch.compile(self.train_model)

        # State ---------------------------------------------------------------------------
        self.epoch = 0
        self.batch_in_epoch = 0
        self.global_step = 0
        self.nonfinite_total = 0
        self.nonfinite_consecutive = 0
        self.best_ap: float | None = None
        self.best_epoch: int | None = None
        self.evals_without_improvement = 0
        self.stopped_early = False
        self.history: list[dict] = []

        self.run_dir = self._make_run_dir()
        self.topk = TopKCheckpoints(self.run_dir / "topk", cfg.train.top_k)
        if self.resume_path is not None:
            self._load_resume(self.resume_path)
        self.writer = None
        if self.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    # ------------------------------------------------------------------ run directory
    def _make_run_dir(self) -> Path:
        if self.resume_path is not None:
            return self.resume_path.parent
        from kpfast.engine.rundir import create_run_dir  # a fresh directory this run owns (rank 0 makes it)

        train = self.config.train
        made = create_run_dir(train.output_dir, train.run_name, self.config.model.name) if self.is_main else None
        return Path(dist_utils.broadcast_object(str(made) if made is not None else None))

    def log(self, text: str) -> None:
        if self.is_main:
            self._log(text)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self, rng_states: list[dict] | None = None) -> dict:
        """Everything needed to resume; ``rng_states`` holds one entry per rank (default: this rank's)."""
        return {
            "version": CHECKPOINT_VERSION,
            "config": config_to_dict(self.config),
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "rng": rng_states if rng_states is not None else [capture_rng_state()],
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "nonfinite_total": self.nonfinite_total,
            "early_stopping": {
                "best_ap": self.best_ap,
                "best_epoch": self.best_epoch,
                "evals_without_improvement": self.evals_without_improvement,
                "stopped_early": self.stopped_early,
            },
            "topk": self.topk.state_dict(),
            "history": self.history,
            "world_size": self.dist.world_size,
            "dataset_info": self.dataset_info_dict(),
        }

    def dataset_info_dict(self) -> dict:
        info = self.dataset_info
        return {
            "keypoint_names": list(info.keypoint_names),
            "flip_pairs": [list(p) for p in info.flip_pairs],
            "skeleton": [list(p) for p in info.skeleton],
            "sigmas": [float(s) for s in info.sigmas],
        }

    def _load_resume(self, path: Path) -> None:
        state = load_checkpoint(path, map_location="cpu")
        if state.get("world_size", 1) != self.dist.world_size:
            raise ValueError(
                f"resume: checkpoint was written with world_size={state.get('world_size')} but this run has "
                f"world_size={self.dist.world_size}; the data order would differ"
            )
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError("resume: train.ema is on but the checkpoint has no EMA state")
            self.ema.load_state_dict(state["ema"])
        self.epoch = int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.global_step = int(state["global_step"])
        self.nonfinite_total = int(state["nonfinite_total"])
        early = state["early_stopping"]
        self.best_ap = early["best_ap"]
        self.best_epoch = early["best_epoch"]
        self.evals_without_improvement = int(early["evals_without_improvement"])
        self.stopped_early = bool(early["stopped_early"])
        self.topk.load_state_dict(state["topk"])
        self.history = list(state["history"])
        rng_states = state["rng"]
        if len(rng_states) != self.dist.world_size:
            raise ValueError(
                f"resume: checkpoint holds {len(rng_states)} RNG states for world size {self.dist.world_size}"
            )
        restore_rng_state(rng_states[self.dist.rank])
        self.log(f"resumed from {path}: epoch {self.epoch}, batch {self.batch_in_epoch}, step {self.global_step}")

    def save_last(self) -> None:
        """Write last.pt (rank 0). Every rank must call this: RNG states are gathered from all."""
        rng_states = dist_utils.all_gather_objects(capture_rng_state())
        if self.is_main:
            save_checkpoint(self.state_dict(rng_states), self.run_dir / "last.pt")

    # ------------------------------------------------------------------ training
    def _train_loader(self) -> DataLoader:
        from kpfast.engine import builders

        self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
        self.train_set.set_epoch(self.epoch)
        generator = torch.Generator()
        generator.manual_seed(self.config.train.seed * 7919 + self.epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.config.train.batch_size,
            sampler=self.sampler,
            num_workers=self.config.data.workers,
            collate_fn=builders.collate,
            pin_memory=self.device.type == "cuda",
            drop_last=False,
            generator=generator,
            persistent_workers=False,
            worker_init_fn=single_threaded_worker,
        )

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _train_step(self, batch: dict) -> tuple[float | None, dict, bool]:
        """One optimizer step; returns (loss or None if skipped, parts, stop_requested)."""
        cfg = self.config
        images = batch["image"].to(self.device, non_blocking=True)
        if cfg.model.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batch = {k: (v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        self.train_model.train()
        # BatchNorm updates its running statistics during the forward pass; keep a copy so that a
        # skipped (non-finite) step leaves the model exactly as it was.
        buffers = list(self.model.buffers())
        saved_buffers = [b.detach().clone() for b in buffers]
        with autocast_context(self.device, cfg.train.precision):
            outputs = self.train_model(images)
        loss, parts = self.objective(outputs, batch)
        finite = bool(torch.isfinite(loss).item())
        nonfinite, stop = dist_utils.any_across_ranks(not finite, self._stop.received is not None)
        self.optimizer.zero_grad(set_to_none=True)
        skipped = nonfinite
        if not nonfinite:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            max_norm = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
            if self.scaler.is_enabled():
                # GradScaler skips inf/NaN steps itself and lowers the scale: not a divergence.
                self.scaler.step(self.optimizer)
                self.scaler.update()
            elif torch.isfinite(grad_norm):
                self.optimizer.step()
            else:
                skipped = True  # gradients are all-reduced, so every rank sees the same norm
            self.optimizer.zero_grad(set_to_none=True)
        if skipped:
            with torch.no_grad():
                for buffer, saved in zip(buffers, saved_buffers):
                    buffer.copy_(saved)
            self.nonfinite_total += 1
            self.nonfinite_consecutive += 1
        else:
            self.nonfinite_consecutive = 0
            if self.ema is not None:
                self.ema.update(self.model)
        self.scheduler.step()
        self.global_step += 1
        if self.nonfinite_consecutive >= cfg.train.max_consecutive_nonfinite:
            raise TrainingDiverged(
                f"{self.nonfinite_consecutive} consecutive steps with a non-finite loss or gradient "
                f"(limit train.max_consecutive_nonfinite={cfg.train.max_consecutive_nonfinite}, "
                f"{self.nonfinite_total} skipped in total); lower optim.lr, enable optim.grad_clip "
                f"or use train.precision=fp32"
            )
        value = None if skipped else float(loss.detach())
        return value, {k: float(v.detach()) for k, v in parts.items()}, stop

    def train(self) -> TrainResult:
        from kpfast.engine.reporting import MetricsLogger, ProgressReporter

        cfg = self.config
        metrics_logger = MetricsLogger(self.run_dir / "metrics.csv", self.history) if self.is_main else None
        self._stop = _StopSignal()
        self._stop.install()
        interrupted = False
        steps_this_process = 0
        final_metrics: dict = {}
        try:
            if self.epoch == 0 and self.batch_in_epoch == 0:
                self.log(
                    f"run dir {self.run_dir} | {len(self.train_set)} train / {len(self.data.val)} val instances | "
                    f"{self.steps_per_epoch} steps/epoch x {cfg.train.epochs} epochs | device {self.device} | "
                    f"world size {self.dist.world_size}"
                    + (f" | {self.cpu_threads} CPU thread(s)" if self.cpu_threads else "")
                    + f" | params {sum(p.numel() for p in self.model.parameters()):,}"
                )
            while self.epoch < cfg.train.epochs and not self.stopped_early:
                loader = self._train_loader()
                progress = ProgressReporter(
                    total=self.steps_per_epoch,
                    initial=self.batch_in_epoch,
                    desc=f"epoch {self.epoch + 1}/{cfg.train.epochs}",
                    enabled=self.is_main,
                    log_interval=cfg.train.log_interval,
                    log=self._log,
                )
                sums: dict[str, float] = {}
                counted = 0
                tick = time.perf_counter()
                for batch in loader:
                    data_time = time.perf_counter() - tick
                    loss, parts, stop = self._train_step(batch)
                    self.batch_in_epoch += 1
                    steps_this_process += 1
                    step_time = time.perf_counter() - tick
                    if loss is not None:
                        counted += 1
                        sums["loss"] = sums.get("loss", 0.0) + loss
                        for key, value in parts.items():
                            sums[key] = sums.get(key, 0.0) + value
                    progress.update(loss=loss, lr=self._lr(), data_time=data_time, step_time=step_time)
                    if self.writer is not None and loss is not None:
                        self.writer.add_scalar("train/loss", loss, self.global_step)
                        self.writer.add_scalar("train/lr", self._lr(), self.global_step)
                        for key, value in parts.items():
                            self.writer.add_scalar(f"train/loss_{key}", value, self.global_step)
                    max_reached = cfg.train.max_steps is not None and steps_this_process >= cfg.train.max_steps
                    if stop or max_reached:
                        if stop:
                            self.log(f"stop requested by signal: saving {self.run_dir / 'last.pt'}")
                        interrupted = True
                        break
                    tick = time.perf_counter()
                progress.close()
                if interrupted:
                    if self.batch_in_epoch >= self.steps_per_epoch:
                        # The interruption fell on the epoch's last step: finish the epoch's
                        # bookkeeping so the resumed run starts cleanly at the next epoch.
                        interrupted_at_end = True
                    else:
                        interrupted_at_end = False
                    if not interrupted_at_end:
                        self.save_last()
                        break
                row = {"epoch": self.epoch + 1, "step": self.global_step, "lr": self._lr()}
                row.update({f"train_{k}": v / max(counted, 1) for k, v in sums.items()})
                row["nonfinite_skipped"] = self.nonfinite_total
                self.epoch += 1
                self.batch_in_epoch = 0
                if self.epoch % cfg.train.eval_interval == 0 or self.epoch == cfg.train.epochs:
                    metrics = self.evaluate()
                    final_metrics = metrics
                    row.update({f"val_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
                    self._after_eval(metrics)
                self.history.append(row)
                if metrics_logger is not None:
                    metrics_logger.write(self.history)
                self.save_last()
                if interrupted:
                    break
        finally:
            self._stop.uninstall()
            if self.writer is not None:
                self.writer.flush()
        if not interrupted and self.is_main:
            self._finish()
        return TrainResult(
            run_dir=self.run_dir,
            epochs_completed=self.epoch,
            global_step=self.global_step,
            interrupted=interrupted,
            stopped_early=self.stopped_early,
            best_ap=self.best_ap,
            final_metrics=final_metrics,
        )

    # ------------------------------------------------------------------ evaluation
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else _unwrap(self.model)

    def evaluate(self) -> dict:
        from kpfast.engine.evaluation import evaluate_model

        metrics = evaluate_model(
            self.eval_model(),
            self.data.val,
            self.config,
            self.device,
            dataset_info=self.dataset_info,
            coco_gt=self.data.val_coco,
            distributed=self.dist.world_size > 1,
        )
        if self.is_main:
            self.log(
                f"epoch {self.epoch}: AP {metrics['AP']:.4f} AP50 {metrics['AP50']:.4f} AP75 {metrics['AP75']:.4f} "
                f"AR {metrics['AR']:.4f}"
                + (
                    f" PCK@{self.config.eval.pck_threshold:g} {metrics['PCK']:.4f} EPE {metrics['EPE']:.2f}px"
                    if "PCK" in metrics
                    else ""
                )
            )
            if self.writer is not None:
                for key, value in metrics.items():
                    if isinstance(value, (int, float)):
                        self.writer.add_scalar(f"val/{key}", value, self.epoch)
        return metrics

    def _after_eval(self, metrics: dict) -> None:
        cfg = self.config.train
        ap = float(metrics["AP"])
        improved = self.best_ap is None or ap > self.best_ap + cfg.early_stopping_min_delta
        if improved:
            self.best_ap, self.best_epoch = ap, self.epoch
            self.evals_without_improvement = 0
        else:
            self.evals_without_improvement += 1
        if self.is_main:
            state = None
            if improved or self.topk.would_keep(ap):
                state = self.state_dict()
                state["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            if improved:
                save_checkpoint(state, self.run_dir / "best.pt")
            if self.topk.would_keep(ap):
                self.topk.add(state, ap, self.epoch)
        if cfg.early_stopping_patience and self.evals_without_improvement >= cfg.early_stopping_patience:
            self.stopped_early = True
            self.log(
                f"early stopping: val AP has not improved for {self.evals_without_improvement} evaluations "
                f"(best {self.best_ap:.4f} at epoch {self.best_epoch})"
            )

    def _finish(self) -> None:
        from kpfast.engine.reporting import plot_results

        plot_results(self.history, self.run_dir / "results.png")
        if self.config.train.visualize_samples > 0:
            from kpfast.engine.visualize import save_prediction_grid

            save_prediction_grid(
                self.eval_model(),
                self.data.val,
                self.config,
                self.device,
                self.dataset_info,
                self.run_dir / "val_predictions.jpg",
                num_samples=self.config.train.visualize_samples,
            )
        if self.best_ap is not None:
            self.log(f"best val AP {self.best_ap:.4f} at epoch {self.best_epoch}; checkpoints in {self.run_dir}")


def resolve_resume(resume: str | Path) -> Path:
    path = Path(resume)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return path


def config_from_checkpoint(path: str | Path) -> Config:
    """The resolved config stored in a checkpoint."""
    return config_from_dict(load_checkpoint(path)["config"])
