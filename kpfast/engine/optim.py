"""How the weights are updated after the gradients: the optimizer, its per-step learning-rate
schedule, and the exponential moving average of the weights (:class:`ModelEMA`, updated after
every optimizer step; kept beside the optimizers as torch.optim.swa_utils keeps AveragedModel).

The schedule is a pure function of the optimizer step (``lr_factor``) wrapped in
``torch.optim.lr_scheduler.LambdaLR``, so the scheduler state is just a step counter and a
resumed run reproduces the exact learning rate of an uninterrupted one.
"""

from __future__ import annotations

import copy
import math

import torch

from kpfast.engine.config import OptimConfig, ScheduleConfig
from kpfast.engine.runtime import unwrap_model

__all__ = ["ModelEMA", "build_optimizer", "build_scheduler", "lr_factor", "parameter_groups"]


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


def lr_factor(step: int, steps_per_epoch: int, total_epochs: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based)."""
    if steps_per_epoch <= 0:
        raise ValueError(f"steps_per_epoch: expected > 0, got {steps_per_epoch}")
    epoch = step / steps_per_epoch  # fractional epoch
    warmup = cfg.warmup_epochs
    warm = 1.0
    if warmup > 0 and epoch < warmup:
        warm = cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * (epoch / warmup)

    if cfg.name == "constant":
        main = 1.0
    elif cfg.name == "cosine":
        length = cfg.cycle_epochs if cfg.cycle_epochs is not None else max(total_epochs - warmup, 1e-9)
        main = _cosine((epoch - warmup) / length, cfg.min_lr_factor) if epoch >= warmup else 1.0
    elif cfg.name == "cosine_restarts":
        # SGDR (Loshchilov & Hutter): cycles of length T0, T0*mult, T0*mult^2, ...
        length = cfg.cycle_epochs if cfg.cycle_epochs is not None else max(total_epochs - warmup, 1e-9)
        t = max(epoch - warmup, 0.0)
        while t >= length:
            t -= length
            length *= cfg.cycle_mult
        main = _cosine(t / length, cfg.min_lr_factor) if epoch >= warmup else 1.0
    elif cfg.name == "step":
        main = cfg.gamma ** (int(epoch) // cfg.step_epochs)
    elif cfg.name == "multistep":
        main = cfg.gamma ** sum(1 for m in cfg.milestones if int(epoch) >= m)
    else:
        raise ValueError(f"schedule.name: unknown schedule {cfg.name!r}")
    return warm * main


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

