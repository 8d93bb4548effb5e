"""Lite-HRNet backbone (Yu et al., "Lite-HRNet: A Lightweight High-Resolution Network", CVPR 2021).

Module names follow the authors' code and MMPose (``stem``, ``transition0``, ``stage0``,
``head_layer`` ...), and the fuse layers copy their quirk (see :meth:`LiteHRModule._fuse`), so
official/MMPose backbone state dicts load into :class:`LiteHRNet` unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import ConditionalChannelWeighting, DepthwiseSeparableConv, ShuffleUnit, Stem

__all__ = ["LiteHRNetConfig", "LiteHRModule", "IterativeHead", "LiteHRNet"]

BLOCK_TYPES = ("lite", "naive")


# Upper bounds of LiteHRNetConfig's sizes (see LiteHRNetConfig._check_size).
MAX_CHANNELS = 4096
MAX_IN_CHANNELS = 64
MAX_REPEATS = 64
MAX_EXPAND_RATIO = 64.0
MAX_WEIGHT_ESTIMATE = 2e9


@dataclasses.dataclass(frozen=True)
class LiteHRNetConfig:
    """Every structural choice of the network.

    Stage ``i`` has ``min(i + 2, num_branches)`` branches (the paper's 2, 3, 4 for three stages
    and four branches); branch ``b`` has ``base_width * 2**b`` channels at ``1 / (4 * 2**b)`` of
    the input resolution.
    """

    base_width: int = 40
    num_branches: int = 4
    num_modules: tuple[int, ...] = (2, 4, 2)
    num_blocks: tuple[int, ...] = (2, 2, 2)
    reduce_ratios: tuple[int, ...] = (8, 8, 8)
    with_fuse: bool = True
    block_type: str = "lite"
    stem_channels: int = 32
    stem_out_channels: int | None = None  # None: same as stem_channels
    stem_expand_ratio: float = 1.0
    in_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("num_modules", "num_blocks", "reduce_ratios"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool) and name != "num_modules":
                value = (value,) * len(self.num_modules)  # one value for every stage
            if (
                not isinstance(value, Sequence)
                or not value
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
            ):
                raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        num_stages = len(self.num_modules)
        for name in ("num_blocks", "reduce_ratios"):
            if len(getattr(self, name)) != num_stages:
                raise ValueError(
                    f"{name} must have one entry per stage ({num_stages}, from num_modules), "
                    f"got {getattr(self, name)!r}"
                )
        if not isinstance(self.num_branches, int) or not 1 <= self.num_branches <= 4:
            raise ValueError(f"num_branches must be an int in 1..4, got {self.num_branches!r}")
        if num_stages < self.num_branches - 1:
            raise ValueError(
                f"num_branches={self.num_branches} needs at least {self.num_branches - 1} stages "
                f"(one new branch per stage), got num_modules={self.num_modules!r}"
            )
        if not isinstance(self.base_width, int) or self.base_width < 2 or self.base_width % 2:
            raise ValueError(f"base_width must be an even int >= 2, got {self.base_width!r}")
        if self.block_type not in BLOCK_TYPES:
            raise ValueError(f"block_type must be one of {BLOCK_TYPES}, got {self.block_type!r}")
        if not isinstance(self.with_fuse, bool):
            raise ValueError(f"with_fuse must be a bool, got {self.with_fuse!r}")
        if self.block_type == "lite" and self.base_width < 8:
            # The CCW block halves each branch and spatial weighting divides that half by 4.
            raise ValueError(f"block_type='lite' needs base_width >= 8, got {self.base_width}")
        if not isinstance(self.stem_channels, int) or self.stem_channels < 2 or self.stem_channels % 2:
            raise ValueError(f"stem_channels must be an even int >= 2, got {self.stem_channels!r}")
        if self.stem_expand_ratio <= 0:
            raise ValueError(f"stem_expand_ratio must be > 0, got {self.stem_expand_ratio!r}")
        if not isinstance(self.in_channels, int) or self.in_channels < 1:
            raise ValueError(f"in_channels must be a positive int, got {self.in_channels!r}")
        self._check_size()

    def _check_size(self) -> None:
        """Bound what the sizes may ask for before any weight is allocated: a typo such as
        base_width=20000 must be an error, not an out-of-memory kill."""
        for name in ("num_modules", "num_blocks"):
            if max(getattr(self, name)) > MAX_REPEATS:
                raise ValueError(f"{name} entries must be <= {MAX_REPEATS}, got {getattr(self, name)!r}")
        for name, limit in (("stem_channels", MAX_CHANNELS), ("in_channels", MAX_IN_CHANNELS)):
            if getattr(self, name) > limit:
                raise ValueError(f"{name} must be <= {limit}, got {getattr(self, name)!r}")
        if not self.stem_expand_ratio <= MAX_EXPAND_RATIO:
            raise ValueError(f"stem_expand_ratio must be <= {MAX_EXPAND_RATIO}, got {self.stem_expand_ratio!r}")
        widest = self.base_width * 2 ** (self.num_branches - 1)
        if widest > MAX_CHANNELS:
            raise ValueError(f"base_width={self.base_width} gives {widest} channels in branch {self.num_branches} "
                             f"(base_width * 2**(num_branches-1)); the limit is {MAX_CHANNELS}")
        blocks = sum(m * b for m, b in zip(self.num_modules, self.num_blocks))
        # An upper bound on the weights (each block's convolutions at the widest width): about
        # 6x the real count of the published (lite) presets.
        per_block = 9 if self.block_type == "naive" else 1  # naive blocks are full 3x3 convolutions
        stem = int(self.stem_channels**2 * self.stem_expand_ratio * 16)
        estimate = per_block * blocks * self.num_branches * widest**2 + stem
        if estimate > MAX_WEIGHT_ESTIMATE:
            raise ValueError(f"the model would have up to ~{estimate:.2g} weights (base_width={self.base_width}, "
                             f"num_modules={self.num_modules}, num_blocks={self.num_blocks}); the limit is "
                             f"{MAX_WEIGHT_ESTIMATE:.0g}")

    @property
    def stage_branches(self) -> tuple[int, ...]:
        return tuple(min(i + 2, self.num_branches) for i in range(len(self.num_modules)))

    def stage_channels(self, stage: int) -> list[int]:
        return [self.base_width * 2**b for b in range(self.stage_branches[stage])]

    @property
    def input_multiple(self) -> int:
        """H and W must be multiples of the stride of the lowest-resolution branch, so that each
        branch is exactly half the previous one and the fuse upsampling lines up."""
        return 4 * 2 ** (max(self.stage_branches) - 1)


class LiteHRModule(nn.Module):
    """One high-resolution module: per-branch blocks, then (optionally) multi-resolution fusion."""

    def __init__(
        self,
        in_channels: Sequence[int],
        num_blocks: int,
        reduce_ratio: int,
        block_type: str = "lite",
        with_fuse: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = list(in_channels)
        self.num_branches = len(self.in_channels)
        self.block_type = block_type
        if block_type == "lite":
            self.layers = nn.Sequential(
                *(ConditionalChannelWeighting(self.in_channels, reduce_ratio) for _ in range(num_blocks))
            )
        else:
            self.layers = nn.ModuleList(
                nn.Sequential(*(ShuffleUnit(c, c) for _ in range(num_blocks))) for c in self.in_channels
            )
        self.with_fuse = with_fuse and self.num_branches > 1
        if self.with_fuse:
            self.fuse_layers = self._make_fuse_layers()
            self.relu = nn.ReLU()

    def _make_fuse_layers(self) -> nn.ModuleList:
        channels = self.in_channels
        rows = []
        for i in range(self.num_branches):
            row: list[nn.Module | None] = []
            for j in range(self.num_branches):
                if j > i:  # lower resolution -> 1x1 conv to branch i's width, then upsample
                    row.append(
                        nn.Sequential(
                            nn.Conv2d(channels[j], channels[i], 1, bias=False),
                            nn.BatchNorm2d(channels[i]),
                            nn.Upsample(scale_factor=2 ** (j - i), mode="nearest"),
                        )
                    )
                elif j == i:
                    row.append(None)
                else:  # higher resolution -> (i - j) stride-2 depthwise-separable steps
                    steps = []
                    for k in range(i - j):
                        last = k == i - j - 1
                        out_c = channels[i] if last else channels[j]
                        step = [
                            nn.Conv2d(channels[j], channels[j], 3, 2, 1, groups=channels[j], bias=False),
                            nn.BatchNorm2d(channels[j]),
                            nn.Conv2d(channels[j], out_c, 1, bias=False),
                            nn.BatchNorm2d(out_c),
                        ]
                        if not last:
                            step.append(nn.ReLU())
                        steps.append(nn.Sequential(*step))
                    row.append(nn.Sequential(*steps))
            rows.append(nn.ModuleList(row))
        return nn.ModuleList(rows)

    def _fuse(self, out: list[torch.Tensor]) -> list[torch.Tensor]:
        # Reproduces the official/MMPose LiteHRModule.forward exactly, written out of place:
        # there `y = out[0]` and the loop over j starts at 0 with in-place `+=`, so branch 0
        # enters every output twice, and row 0's in-place sum overwrites out[0] (pre-ReLU)
        # before rows 1.. read it. Weights trained that way need the same arithmetic.
        # The official code evaluates fuse_layers[i][0] twice; we evaluate it once and double
        # it (identical output and gradients, half the work).
        n = self.num_branches
        branch0 = out[0]
        fused = []
        for i in range(n):
            row = self.fuse_layers[i]
            if i == 0:
                y = branch0 + branch0
            else:
                from_branch0 = row[0](branch0)
                y = from_branch0 + from_branch0
            for j in range(1, n):
                y = y + (out[j] if j == i else row[j](out[j]))
            if i == 0:
                branch0 = y
            fused.append(self.relu(y))
        return fused

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.block_type == "lite":
            out = self.layers(list(xs))
        else:
            out = [branch(x) for branch, x in zip(self.layers, xs)]
        return self._fuse(out) if self.with_fuse else out


class IterativeHead(nn.Module):
    """Aggregates the branches from the lowest resolution up: ``s + bilinear_up(prev)`` then a
    depthwise-separable conv that maps to the next branch's width (320->160->80->40->40)."""

    def __init__(self, in_channels: Sequence[int]) -> None:
        super().__init__()
        reversed_channels = list(in_channels)[::-1]
        n = len(reversed_channels)
        self.projects = nn.ModuleList(
            DepthwiseSeparableConv(
                reversed_channels[i], reversed_channels[i + 1] if i < n - 1 else reversed_channels[i]
            )
            for i in range(n)
        )

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        previous = None
        for x, project in zip(xs[::-1], self.projects):
            if previous is not None:
                x = x + F.interpolate(previous, size=x.shape[-2:], mode="bilinear", align_corners=True)
            previous = project(x)
        return previous


@contextlib.contextmanager
def _batchnorm_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Recompute context for checkpointing: the recomputed forward must not update BatchNorm
    running statistics a second time (each training step must move them exactly once, as without
    checkpointing)."""
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: unchanged
    try:
        yield
    finally:
        for m, momentum, tracked in saved:
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


class LiteHRNet(nn.Module):
    """Lite-HRNet / naive Lite-HRNet backbone with the iterative head.

    ``forward(x)`` returns the ``base_width``-channel feature map at 1/4 of the input resolution.
    """

    def __init__(self, config: LiteHRNetConfig) -> None:
        super().__init__()
        self.config = config
        self.gradient_checkpointing = False
        self.stem = Stem(
            config.in_channels,
            config.stem_channels,
            config.stem_out_channels or config.stem_channels,
            config.stem_expand_ratio,
        )
        previous = [self.stem.out_channels]
        self.num_stages = len(config.num_modules)
        for s in range(self.num_stages):
            channels = config.stage_channels(s)
            setattr(self, f"transition{s}", self._make_transition(previous, channels))
            stage = nn.Sequential(
                *(
                    LiteHRModule(
                        channels,
                        config.num_blocks[s],
                        config.reduce_ratios[s],
                        config.block_type,
                        config.with_fuse,
                    )
                    for _ in range(config.num_modules[s])
                )
            )
            setattr(self, f"stage{s}", stage)
            previous = channels
        self.head_layer = IterativeHead(previous)
        self.out_channels = previous[0]

    @staticmethod
    def _make_transition(previous: list[int], current: list[int]) -> nn.ModuleList:
        layers: list[nn.Module | None] = []
        for i, out_c in enumerate(current):
            if i < len(previous):
                if out_c == previous[i]:
                    layers.append(None)
                else:
                    layers.append(
                        nn.Sequential(
                            nn.Conv2d(previous[i], previous[i], 3, 1, 1, groups=previous[i], bias=False),
                            nn.BatchNorm2d(previous[i]),
                            nn.Conv2d(previous[i], out_c, 1, bias=False),
                            nn.BatchNorm2d(out_c),
                            nn.ReLU(),
                        )
                    )
            else:  # new branch(es), each from the lowest-resolution existing branch, stride 2
                steps = []
                in_c = previous[-1]
                for k in range(i + 1 - len(previous)):
                    step_out = out_c if k == i - len(previous) else in_c
                    steps.append(
                        nn.Sequential(
                            nn.Conv2d(in_c, in_c, 3, 2, 1, groups=in_c, bias=False),
                            nn.BatchNorm2d(in_c),
                            nn.Conv2d(in_c, step_out, 1, bias=False),
                            nn.BatchNorm2d(step_out),
                            nn.ReLU(),
                        )
                    )
                layers.append(nn.Sequential(*steps))
        return nn.ModuleList(layers)

    def set_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each LiteHRModule in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = bool(enabled)

    def _run_module(self, module: LiteHRModule, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        if not (self.gradient_checkpointing and torch.is_grad_enabled()):
            return module(xs)
        kwargs = {}
        if not torch.compiler.is_compiling():
            kwargs["context_fn"] = lambda: (contextlib.nullcontext(), _batchnorm_stats_frozen(module))
        return checkpoint(lambda *t: module(list(t)), *xs, use_reentrant=False, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ys = [self.stem(x)]
        for s in range(self.num_stages):
            transition = getattr(self, f"transition{s}")
            xs = []
            for b, layer in enumerate(transition):
                source = ys[b] if b < len(ys) else ys[-1]
                xs.append(source if layer is None else layer(source))
            for module in getattr(self, f"stage{s}"):
                xs = self._run_module(module, xs)
            ys = xs
        return self.head_layer(ys)
