"""The Trainer: builds the parts from a :class:`Config` and wires the loop, evaluation and checkpoints.

The parts live in their own modules: the sync-free step, ``train_one_epoch`` and ``validate`` in
:mod:`kpfast.engine.loop`; the checkpoints (what they hold, the run's progress in
:class:`~kpfast.engine.checkpointer.TrainState`, last/best/top-k, resume) in
:mod:`kpfast.engine.checkpointer`.

Resume is exact at optimizer-step granularity: ``last.pt`` records the TrainState (epoch,
batches already consumed in it, running loss sums, ...), every optimizer/scheduler/scaler/EMA
state and all RNG states; the data order is a pure function of (seed, epoch) and each sample's
augmentation a pure function of (seed, epoch, index) (see :mod:`kpfast.data.sampling`), so a
run stopped by SIGINT/SIGTERM (or ``train.max_steps``) and resumed ends with bit-identical
weights to an uninterrupted run on the same machine and thread count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from kpfast.codecs import build_codec, crop_convention
from kpfast.data.sampling import ResumableSampler, SeededDataset
from kpfast.engine import runtime as dist_utils
from kpfast.engine.checkpointer import (
    Checkpointer,
    ResumePlan,
    TrainingParts,
    TrainState,
    load_checkpoint,
    plan_resume,
    resolve_resume,
)
from kpfast.engine.config import Config, config_from_dict, save_config
from kpfast.engine.evaluation import Evaluator
from kpfast.engine.loop import TrainingDiverged, TrainStep, train_one_epoch, validate
from kpfast.engine.losses import TrainingObjective
from kpfast.engine.optim import ModelEMA, build_optimizer, build_scheduler
from kpfast.engine.reporting import MetricsLogger, ProgressReporter, SafeSummaryWriter, plot_results
from kpfast.engine.runtime import (
    StopSignal,
    configure_cpu_threads,
    seed_everything,
    select_device,
    unwrap_model,
)
from kpfast.engine.rundir import read_run_id

__all__ = ["Trainer", "TrainingDiverged", "TrainResult", "select_device", "seed_everything",
           "configure_cpu_threads", "resolve_resume", "config_from_checkpoint"]

@dataclass
class TrainResult:
    run_dir: Path
    epochs_completed: int
    global_step: int
    interrupted: bool
    stopped_early: bool
    best_ap: float | None
    final_metrics: dict = field(default_factory=dict)


class Trainer:
    """Builds model, data, optimizer, step, evaluator and checkpointer; :meth:`train` runs them.

    ``stop_signal`` (a :class:`~kpfast.engine.runtime.StopSignal`) is public: SIGINT/SIGTERM set
    it while :meth:`train` runs, code may call ``trainer.stop_signal.request()``, and the caller
    reads ``trainer.stop_signal.received`` for its exit status.
    """

    def __init__(self, config: Config, resume: str | Path | None = None, *, log: Callable[[str], None] | None = None,
                 init_weights: str | Path | None = None):
        self.config = cfg = config
        self.resume_path = resolve_resume(resume) if resume else None
        self.device = select_device(cfg.train.device)
        self.dist = dist_utils.init_distributed(self.device)
        self.is_main = self.dist.rank == 0
        self._log = log or (lambda text: print(text, flush=True))
        self.stop_signal = StopSignal()
        self.cpu_threads = configure_cpu_threads(cfg, self.device)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.train.seed + self.dist.rank)

        # Data
        from kpfast.data import build_data

        self.data = build_data(cfg.data, num_keypoints=cfg.model.num_keypoints,
                               convention=crop_convention(cfg.loss.encoding), seed=cfg.train.seed,
                               protocol=cfg.eval.protocol)
        self.dataset_info = self.data.info
        self.train_set = SeededDataset(self.data.train, seed=cfg.train.seed)
        self.sampler = ResumableSampler(
            len(self.train_set), cfg.train.batch_size, shuffle=True, seed=cfg.train.seed,
            num_replicas=self.dist.world_size, rank=self.dist.rank,
            drop_last=len(self.train_set) // self.dist.world_size > cfg.train.batch_size,
        )
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train.batch_size: {cfg.train.batch_size} leaves no batch for {len(self.train_set)} samples"
            )

        # Model and optimisation
        model = cfg.model.build()
        # Fine-tuning (docs/pretrained.md): pretrained weights before the optimizer and EMA see the model.
        self.init_report = None
        if init_weights is not None:
            from kpfast.models.pretrained import load_into

            self.init_report = load_into(model, str(init_weights), preset=cfg.model.name, overrides=cfg.model.overrides)
        model = model.to(self.device)
        if cfg.model.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.codec = build_codec(cfg, self.dataset_info.flip_pairs, model)
        self.heatmap_size = self.codec.heatmap_size
        self.optimizer = build_optimizer(model, cfg.optim)
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule, self.steps_per_epoch, cfg.train.epochs)
        use_scaler = cfg.train.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)
        self.ema = ModelEMA(model, cfg.train.ema_decay) if cfg.train.ema else None
        self.objective = TrainingObjective(cfg.loss, self.codec)
        train_model: torch.nn.Module = model
        if self.dist.world_size > 1:
            train_model = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if cfg.model.compile:
            train_model = torch.compile(train_model)
        self.train_model = train_model
        self.step = TrainStep(model, train_model, self.objective, self.optimizer, self.scaler, self.ema,
                              device=self.device, grad_clip=cfg.optim.grad_clip, precision=cfg.train.precision,
                              channels_last=cfg.model.channels_last,
                              photometric=getattr(self.data.train, "photometric", None))
        self.evaluator = Evaluator(self.data.val, cfg, self.device, self.dataset_info,
                                   distributed=self.dist.world_size > 1)

        # Run state and files
        self.state = TrainState()
        saved = load_checkpoint(self.resume_path, map_location="cpu") if self.resume_path is not None else None
        self.resume_plan: ResumePlan | None = plan_resume(self.resume_path, saved) if saved is not None else None
        self.run_dir, self.run_id = self._make_run_dir(saved)
        self.checkpointer = Checkpointer(
            self.run_dir, cfg.train.top_k, is_main=self.is_main, config=cfg, dataset_info=self.dataset_info,
            parts=TrainingParts(self.model, self.optimizer, self.scheduler, self.scaler, self.ema),
            run_id=self.run_id, world_size=self.dist.world_size, rank=self.dist.rank,
        )
        self.metrics_logger = MetricsLogger(self.run_dir / "metrics.csv") if self.is_main else None
        if saved is not None:
            self._load_resume(saved)
        self.writer = None
        if self.is_main:
            save_config(cfg, self.run_dir / "config.yaml")
            self.writer = SafeSummaryWriter(self.run_dir / "tensorboard", self.log)

    # ------------------------------------------------------------------ convenience views of the state
    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def global_step(self) -> int:
        return self.state.global_step

    @property
    def nonfinite_total(self) -> int:
        return self.state.nonfinite_total

    @property
    def history(self) -> list[dict]:
        return self.state.history

    @property
    def best_ap(self) -> float | None:
        return self.state.best_ap

    def log(self, text: str) -> None:
        if self.is_main:
            self._log(text)

    # ------------------------------------------------------------------ run directory
    def _make_run_dir(self, saved: dict | None) -> tuple[Path, str | None]:
        """The run folder and its id: the resumed run's own folder (see
        kpfast.engine.checkpointer.plan_resume), else a fresh folder this run owns (rank 0 makes it)."""
        plan = self.resume_plan
        if plan is not None and plan.in_place:
            return plan.run_dir, read_run_id(plan.run_dir)
        from kpfast.engine.rundir import create_run_dir

        train = self.config.train
        run_name = train.run_name
        if saved is not None and run_name is not None and run_name == saved["config"].get("train", {}).get("run_name"):
            run_name = None  # the old run's name is taken by the old run: a new run gets a default name
        made = None
        if self.is_main:
            made = create_run_dir(train.output_dir, run_name, self.config.model.name)
            made = (str(made), read_run_id(made))
        run_dir, run_id = dist_utils.broadcast_object(made)
        return Path(run_dir), run_id

    # ------------------------------------------------------------------ checkpoints
    def _load_resume(self, saved: dict) -> None:
        path, plan = self.resume_path, self.resume_plan
        state = self.checkpointer.restore(saved, in_place=plan.in_place)
        # The BN backup of the step starts from the restored buffers.
        torch._foreach_copy_(self.step.buffer_backup, self.step.buffers)
        self.step.load_counters(state.nonfinite_total, state.nonfinite_consecutive)
        self.state = state
        if self.metrics_logger is not None:
            # metrics.csv may hold rows written after this last.pt (a crash in between).
            self.metrics_logger.write(state.history)
        self.log(f"resumed from {path}: epoch {state.epoch}, batch {state.batch_in_epoch}, step {state.global_step}")
        if not plan.in_place:
            self.log(f"new run {self.run_dir} from {path} ({plan.reason}); nothing in {path.parent} is changed")

    def save_last(self) -> None:
        """Write last.pt (rank 0). Every rank must call this: RNG states are gathered from all."""
        self.checkpointer.save_last(self.state)

    # ------------------------------------------------------------------ training
    def _train_loader(self):
        from kpfast.data import LoaderConfig, build_loader

        self.sampler.set_epoch(self.state.epoch, self.state.batch_in_epoch)
        self.train_set.set_epoch(self.state.epoch)
        # The ResumableSampler shuffles, shards and drops the last partial batch itself: the
        # loader must batch every index it yields, in order (train=False: no shuffle, no drop).
        loader = LoaderConfig(batch_size=self.config.train.batch_size, num_workers=self.config.data.num_workers,
                              pin_memory=self.device.type == "cuda")
        return build_loader(self.train_set, loader, sampler=self.sampler, train=False)

    def _epoch_row(self) -> dict:
        state = self.state
        row = {"epoch": state.epoch + 1, "step": state.global_step, "lr": float(self.optimizer.param_groups[0]["lr"])}
        if state.epoch_loss_count > 0:
            row.update({f"train_{k}": v / state.epoch_loss_count for k, v in state.epoch_loss_sums.items()})
        row["nonfinite_skipped"] = state.nonfinite_total
        return row

    def train(self) -> TrainResult:
        cfg = self.config
        state = self.state
        self.stop_signal.install()
        interrupted = False
        final_metrics: dict = {}
        steps_left = cfg.train.max_steps
        try:
            if state.epoch == 0 and state.batch_in_epoch == 0:
                if self.init_report is not None:
                    self.log(f"initial weights: {self.init_report.summary()}")
                self.log(
                    f"run dir {self.run_dir} | {len(self.train_set)} train / {len(self.data.val)} val instances | "
                    f"{self.steps_per_epoch} steps/epoch x {cfg.train.epochs} epochs | device {self.device} | "
                    f"world size {self.dist.world_size}"
                    + (f" | {self.cpu_threads} CPU thread(s)" if self.cpu_threads else "")
                    + f" | params {sum(p.numel() for p in self.model.parameters()):,}"
                )
            while state.epoch < cfg.train.epochs and not state.stopped_early:
                progress = ProgressReporter(
                    total=self.steps_per_epoch, initial=state.batch_in_epoch,
                    desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}", enabled=self.is_main,
                    log_interval=cfg.train.log_interval, log=self._log,
                )
                step_before = state.global_step
                try:
                    interrupted = train_one_epoch(
                        self.step, self._train_loader(), state, self.scheduler,
                        steps_per_epoch=self.steps_per_epoch, log_interval=cfg.train.log_interval,
                        max_consecutive_nonfinite=cfg.train.max_consecutive_nonfinite,
                        stop_requested=lambda: self.stop_signal.requested, max_steps=steps_left,
                        progress=progress, writer=self.writer,
                    )
                finally:
                    progress.close()
                if steps_left is not None:
                    steps_left -= state.global_step - step_before
                if interrupted and self.stop_signal.requested:
                    self.log(f"stop requested by signal: saving {self.run_dir / 'last.pt'}")
                if interrupted and state.batch_in_epoch < self.steps_per_epoch:
                    self.save_last()
                    break
                # The epoch is complete (an interruption on its last step finishes its bookkeeping
                # so that the resumed run starts cleanly at the next epoch).
                row = self._epoch_row()
                state.epoch += 1
                state.batch_in_epoch = 0
                state.epoch_loss_sums, state.epoch_loss_count = {}, 0
                evaluated = state.epoch % cfg.train.eval_interval == 0 or state.epoch == cfg.train.epochs
                if evaluated:
                    final_metrics = self.evaluate()
                    row.update({f"val_{k}": v for k, v in final_metrics.items() if isinstance(v, (int, float))})
                # Before best/top-k are written: their payloads hold this epoch's row too.
                state.history.append(row)
                if evaluated:
                    self._after_eval(final_metrics)
                self.save_last()  # after best/top-k, before metrics.csv (see kpfast.engine.checkpointer)
                if self.metrics_logger is not None:
                    self.metrics_logger.write(state.history)
                if interrupted:
                    break
        finally:
            self.stop_signal.uninstall()
            if self.writer is not None:
                self.writer.flush()
        if not interrupted and self.is_main:
            self._finish()
        return TrainResult(
            run_dir=self.run_dir, epochs_completed=state.epoch, global_step=state.global_step,
            interrupted=interrupted, stopped_early=state.stopped_early, best_ap=state.best_ap,
            final_metrics=final_metrics,
        )

    # ------------------------------------------------------------------ evaluation
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else unwrap_model(self.model)

    def evaluate(self) -> dict:
        return validate(self.evaluator, self.eval_model(), self.state.epoch, log=self.log if self.is_main else None,
                        writer=self.writer, pck_threshold=self.config.eval.pck_threshold)

    def _after_eval(self, metrics: dict) -> None:
        cfg = self.config.train
        state = self.state
        ap = float(metrics["AP"])
        improved = state.best_ap is None or ap > state.best_ap + cfg.early_stopping_min_delta
        if improved:
            state.best_ap, state.best_epoch = ap, state.epoch
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1

        self.checkpointer.save_evaluated(state, ap, improved, metrics)
        if cfg.early_stopping_patience and state.evals_without_improvement >= cfg.early_stopping_patience:
            state.stopped_early = True
            self.log(
                f"early stopping: val AP has not improved for {state.evals_without_improvement} evaluations "
                f"(best {state.best_ap:.4f} at epoch {state.best_epoch})"
            )

    def _finish(self) -> None:
        plot_results(self.state.history, self.run_dir / "results.png")
        if self.config.train.visualize_samples > 0:
            from kpfast.engine.visualize import save_prediction_grid

            save_prediction_grid(
                self.eval_model(), self.data.val, self.config, self.device, self.dataset_info,
                self.run_dir / "val_predictions.jpg", num_samples=self.config.train.visualize_samples,
            )
        if self.state.best_ap is not None:
            self.log(f"best val AP {self.state.best_ap:.4f} at epoch {self.state.best_epoch}; "
                     f"checkpoints in {self.run_dir}")


def config_from_checkpoint(path: str | Path) -> Config:
    """The resolved config stored in a checkpoint."""
    return config_from_dict(load_checkpoint(path)["config"])
