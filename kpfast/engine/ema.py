"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch

from kpfast.engine.runtime import unwrap_model

__all__ = ["ModelEMA"]


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

