"""How the weights are updated after the gradients: the optimizer and its config sections, its
per-step learning-rate schedule (a registry, docs/training.md "Learning-rate schedules"), and the
exponential moving average of the weights (:class:`ModelEMA`, updated after every optimizer step;
kept beside the optimizers as torch.optim.swa_utils keeps AveragedModel).

The schedule is a pure function of the optimizer step (``lr_factor``) wrapped in
``torch.optim.lr_scheduler.LambdaLR``, so the scheduler state is just a step counter and a
resumed run reproduces the exact learning rate of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
from typing import Literal, Optional

import torch
from pydantic import field_validator

from kpfast.engine.runtime import unwrap_model
from kpfast.schema import Float, Registry, Section, field, show

__all__ = ["ModelEMA", "OptimConfig", "ScheduleConfig", "SCHEDULES", "build_optimizer", "build_scheduler", "lr_factor",
           "parameter_groups", "register_schedule"]


# The optim: and schedule: sections of the config (composed by kpfast/engine/config.py): this
# module owns them, as it owns the schedule registry they are checked against.

class OptimConfig(Section):
    name: Literal["adamw", "adam", "sgd"] = field("adamw", resume=True)
    lr: Float = field(1e-3, gt=0.0)
    weight_decay: Float = field(1e-4, ge=0.0)
    betas: list = field([0.9, 0.999], resume=True)
    momentum: Float = field(0.9, ge=0.0, le=1.0)
    # Max global gradient norm; None disables clipping.
    grad_clip: Optional[Float] = field(None, gt=0.0)

    @field_validator("betas")
    @classmethod
    def _two_betas(cls, betas: list) -> list:
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1
                                      for b in betas):
            raise ValueError(f"expected two floats in [0, 1), got {show(betas)}")
        return betas


class ScheduleConfig(Section):
    """Learning-rate schedule, evaluated per optimizer step (epochs may be fractional)."""

    # A name in kpfast.engine.optim.SCHEDULES.
    name: str = field("cosine", resume=True)
    warmup_epochs: Float = field(0.0, ge=0.0)
    warmup_start_factor: Float = field(0.001, ge=0.0, le=1.0)
    # cosine / cosine_restarts: first cycle length (epochs, after warm-up) and growth factor.
    cycle_epochs: Optional[Float] = field(None, gt=0.0)
    cycle_mult: Float = field(2.0, ge=1.0)
    min_lr_factor: Float = field(0.0, ge=0.0, le=1.0)
    # step / multistep
    step_epochs: int = field(30, ge=1)
    milestones: list = field([170, 200])
    gamma: Float = field(0.1, gt=0.0)

    @field_validator("name")
    @classmethod
    def _registered(cls, value: str) -> str:
        return SCHEDULES.check(value)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, ms: list) -> list:
        numbers = all(isinstance(m, (int, float)) and not isinstance(m, bool) and m > 0 for m in ms)
        if not numbers or list(ms) != sorted(ms):
            raise ValueError(f"expected increasing positive numbers, got {show(ms)}")
        return ms


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay conv/linear weights only; biases and normalisation parameters (1-D) are not decayed."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimizer, in its fused implementation.

    Fused optimizers take a ``found_inf`` tensor and skip the whole update on the device when
    it is nonzero (what GradScaler relies on); the training step uses that to skip non-finite
    steps without the host ever reading the flag (see :mod:`kpfast.engine.loop`).
    """
    groups = parameter_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("model: has no trainable parameters")
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    if cfg.name == "adam":
        # Classic Adam applies weight decay as L2 in the gradient (the published Lite-HRNet recipe
        # uses weight_decay=0).
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    if cfg.name == "sgd":
        optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                                    fused=True)
        if cfg.momentum > 0:
            # Fused SGD allocates an uninitialised momentum buffer on its first step even when that
            # step is skipped (found_inf); a zero buffer gives the same first update (buf = grad)
            # and makes a skipped first step leave the state clean.
            for group in optimizer.param_groups:
                for param in group["params"]:
                    optimizer.state[param]["momentum_buffer"] = torch.zeros_like(param)
        return optimizer
    raise ValueError(f"optim.name: expected adamw|adam|sgd, got {cfg.name!r}")


def _cosine(progress: float, min_factor: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


# name -> f(epoch, total_epochs, cfg) -> the main schedule's factor at a fractional epoch
# (warm-up is applied on top by lr_factor). schedule.name in a config is validated against it.
SCHEDULES = Registry("schedule")


def register_schedule(name: str):
    """Decorator adding ``f(epoch, total_epochs, cfg) -> factor`` to :data:`SCHEDULES` under
    ``name`` (docs/training.md, "Learning-rate schedules"). ``epoch`` is fractional and counts
    from the start of training; ``cfg.warmup_epochs`` tells where warm-up ends."""
    return SCHEDULES.register(name)


def _cycle_length(total_epochs: int, cfg: ScheduleConfig) -> float:
    return cfg.cycle_epochs if cfg.cycle_epochs is not None else max(total_epochs - cfg.warmup_epochs, 1e-9)


@register_schedule("constant")
def _constant(epoch: float, total_epochs: int, cfg: ScheduleConfig) -> float:
    return 1.0


@register_schedule("cosine")
def _cosine_schedule(epoch: float, total_epochs: int, cfg: ScheduleConfig) -> float:
    if epoch < cfg.warmup_epochs:
        return 1.0
    return _cosine((epoch - cfg.warmup_epochs) / _cycle_length(total_epochs, cfg), cfg.min_lr_factor)


@register_schedule("cosine_restarts")
def _cosine_restarts(epoch: float, total_epochs: int, cfg: ScheduleConfig) -> float:
    # SGDR (Loshchilov & Hutter): cycles of length T0, T0*mult, T0*mult^2, ...
    if epoch < cfg.warmup_epochs:
        return 1.0
    length = _cycle_length(total_epochs, cfg)
    t = epoch - cfg.warmup_epochs
    while t >= length:
        t -= length
        length *= cfg.cycle_mult
    return _cosine(t / length, cfg.min_lr_factor)


@register_schedule("step")
def _step(epoch: float, total_epochs: int, cfg: ScheduleConfig) -> float:
    return cfg.gamma ** (int(epoch) // cfg.step_epochs)


@register_schedule("multistep")
def _multistep(epoch: float, total_epochs: int, cfg: ScheduleConfig) -> float:
    return cfg.gamma ** sum(1 for m in cfg.milestones if int(epoch) >= m)


def lr_factor(step: int, steps_per_epoch: int, total_epochs: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based): the warm-up
    ramp times the registered schedule's factor."""
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch: expected > 0, got {steps_per_epoch}")
    schedule = SCHEDULES.get(cfg.name)
    if schedule is None:
        raise ValueError(f"schedule.name: expected one of {sorted(SCHEDULES)}, got {cfg.name!r}")
    epoch = step / steps_per_epoch  # fractional epoch
    warmup = cfg.warmup_epochs
    warm = 1.0
    if warmup > 0 and epoch < warmup:
        warm = cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * (epoch / warmup)
    return warm * schedule(epoch, total_epochs, cfg)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, total_epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR stepped once per optimizer step."""

    def factor(step: int) -> float:
        return lr_factor(step, steps_per_epoch, total_epochs, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ModelEMA:
    """Keeps ``ema = d * ema + (1 - d) * weights`` after every optimizer step.

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates so that the
    average is not dominated by the random initialisation. Buffers (BatchNorm statistics) are
    copied, not averaged.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9998):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay: expected in [0, 1), got {decay}")
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)
        self.decay = decay
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, apply: torch.Tensor | None = None) -> None:
        """One EMA step; ``apply`` (a bool tensor on the model's device) False leaves it unchanged.

        The mask is applied on the device (decay 1 for a skipped step), so a training step that
        was skipped for a non-finite loss updates nothing and the host never waits for the flag.
        ``updates`` counts calls, skipped ones included, which only shifts the decay ramp.
        """
        self.updates += 1
        d = self.current_decay()
        source = unwrap_model(model).state_dict()
        floats, news, others = [], [], []
        for name, value in self.module.state_dict().items():
            new = source[name].detach()
            if value.dtype.is_floating_point:
                floats.append(value)
                news.append(new.to(value.dtype))
            else:
                others.append((value, new))
        if floats:
            if apply is None:
                torch._foreach_mul_(floats, d)
                torch._foreach_add_(floats, news, alpha=1.0 - d)
            else:
                decay = torch.where(apply, d, 1.0).to(floats[0].device, torch.float32)
                torch._foreach_mul_(floats, decay)
                torch._foreach_add_(floats, torch._foreach_mul(news, 1.0 - decay))
        for value, new in others:
            value.copy_(new)

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])

