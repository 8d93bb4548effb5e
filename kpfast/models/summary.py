"""Parameter and multiply-accumulate (MAC) counts.

Usage::

    python -m kpfast.models.summary litehrnet_18 --input 256x192
    python -m kpfast.models.summary            # every preset, as a Markdown table

Two counting conventions (``count_params_and_macs(..., convention=...)``):

``"torch"`` (default)
    MACs of convolutions, linear layers and matmuls from ``torch.utils.flop_counter.FlopCounterMode``
    (MACs = FLOPs / 2). Nothing else counts: no bias adds, BatchNorm, activations, pooling or
    resampling. This is what "MACs" usually means.

``"paper"``
    Reproduces the FLOPs column of the Lite-HRNet paper/README, which comes from the authors'
    ``tools/summary_network.py`` (a vendored ``torchstat``) run on backbone + final 1x1 layer.
    torchstat's "Flops" per leaf module are: conv/linear MACs, plus one add per output element
    for convs with a bias, plus 2 per BatchNorm element, plus 1 per element for ``nn.ReLU``
    modules, plus 1 per output element of ``nn.Upsample`` modules. Sigmoid, adaptive pooling and
    ``F.interpolate`` / ``F.adaptive_avg_pool2d`` calls count nothing (they are not supported or
    not modules), and a module called several times counts once (torchstat overwrites its
    per-module record on every call). The authors' script then prints the total with
    ``M = 2**20`` (binary) -- so the paper's "205.2M" is 205.2 * 2**20 of these units.
    Divide the ``"paper"`` count by :data:`PAPER_FLOPS_UNIT` to compare with the table.
    With this convention every row of the paper's table is reproduced within 1%
    (e.g. Lite-HRNet-18 at 256x192: 205.9 vs 205.2); the plain ``"torch"`` MACs in decimal
    millions are 3-5% lower than the paper's figures (198.6M vs 205.2M).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["PAPER_FLOPS_UNIT", "PAPER_TABLE", "ModelComplexity", "count_params_and_macs", "main", "model_complexity"]

PAPER_FLOPS_UNIT = 2**20  # the "M" of the paper's FLOPs column (torchstat, binary rounding)

# (preset, (H, W)) -> (params in millions, FLOPs in paper units "M"), official README, COCO.
PAPER_TABLE: dict[tuple[str, tuple[int, int]], tuple[float, float]] = {
    ("naive_litehrnet_18", (256, 192)): (0.7, 194.8),
    ("wider_naive_litehrnet_18", (256, 192)): (1.3, 311.1),
    ("litehrnet_18", (256, 192)): (1.1, 205.2),
    ("litehrnet_18", (384, 288)): (1.1, 461.6),
    ("litehrnet_30", (256, 192)): (1.8, 319.2),
    ("litehrnet_30", (384, 288)): (1.8, 717.8),
}

CONVENTIONS = ("torch", "paper")


def _paper_elementwise_ops(model: nn.Module, run) -> int:
    """The non-MAC part of torchstat's count, from forward hooks on leaf modules."""
    per_module: dict[nn.Module, int] = {}

    def hook(module: nn.Module, inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            ops = output.numel() if module.bias is not None else 0
        elif isinstance(module, nn.BatchNorm2d):
            ops = inputs[0].numel() * (2 if module.affine else 1)
        elif isinstance(module, nn.ReLU):
            ops = inputs[0].numel()
        elif isinstance(module, nn.Upsample):
            ops = output.numel()
        else:
            ops = 0
        per_module[module] = ops  # overwrite: torchstat keeps a module's last call only

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return sum(per_module.values())


class ModelComplexity(NamedTuple):
    """Counts for one image: parameters, conv/linear MACs ("torch" convention) and the operation
    count behind the paper's FLOPs column ("paper" convention, in units of 1; divide by
    :data:`PAPER_FLOPS_UNIT` for the paper's "M")."""

    params: int
    macs: int
    paper_flops: int


def model_complexity(model: nn.Module, input_size: Sequence[int]) -> ModelComplexity:
    """Count parameters, MACs and paper-convention FLOPs in one forward pass of one image.

    The forward pass runs on a ``meta``-device copy of the model (shapes only, no arithmetic),
    so counting is cheap and never touches the model's own weights, buffers or mode.
    """
    if (
        len(input_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in input_size)
    ):
        raise ValueError(f"input_size must be (H, W) positive ints, got {input_size!r}")
    params = sum(p.numel() for p in model.parameters())
    shadow = copy.deepcopy(model).to("meta").eval()
    images = torch.zeros(1, getattr(model, "in_channels", 3), *input_size, device="meta")
    counter = FlopCounterMode(display=False)

    def run() -> None:
        with torch.no_grad(), counter:
            shadow(images)

    elementwise = _paper_elementwise_ops(shadow, run)
    macs = counter.get_total_flops() // 2
    return ModelComplexity(params, macs, macs + elementwise)


def count_params_and_macs(
    model: nn.Module, input_size: Sequence[int], convention: str = "torch"
) -> tuple[int, int]:
    """Return ``(parameters, macs)`` for one image of ``input_size = (H, W)``.

    ``convention="torch"``: conv/linear/matmul MACs from ``FlopCounterMode`` (FLOPs / 2).
    ``convention="paper"``: the count behind the paper's FLOPs column (see the module doc;
    divide by :data:`PAPER_FLOPS_UNIT` to get the paper's "M").
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    counts = model_complexity(model, input_size)
    return counts.params, counts.macs if convention == "torch" else counts.paper_flops


def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--input must look like 256x192 (HxW), got {text!r}") from None
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    from .presets import available_models, build_model

    parser = argparse.ArgumentParser(
        prog="python -m kpfast.models.summary",
        description="Parameters and MACs of kpfast pose models (one image).",
    )
    parser.add_argument("models", nargs="*", help=f"presets (default: all): {', '.join(available_models())}")
    parser.add_argument("--input", type=_parse_size, action="append", help="HxW, e.g. 256x192 (repeatable)")
    parser.add_argument("--num-keypoints", type=int, default=17)
    parser.add_argument("--visibility-head", action="store_true")
    args = parser.parse_args(argv)
    names = args.models or available_models()
    sizes = args.input or [(256, 192)]
    print("| model | input | params | MACs (conv+linear) | paper-convention FLOPs | paper params | paper FLOPs |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        try:
            model = build_model(name, num_keypoints=args.num_keypoints, visibility_head=args.visibility_head)
        except ValueError as error:
            parser.error(str(error))
        for height, width in sizes:
            try:
                model.check_input_size(height, width)
            except ValueError as error:
                parser.error(str(error))
            params, macs, paper_ops = model_complexity(model, (height, width))
            reference = PAPER_TABLE.get((name, (height, width)))
            ref_params, ref_flops = (f"{reference[0]:.1f}M", f"{reference[1]:.1f}M") if reference else ("-", "-")
            print(
                f"| {name} | {height}x{width} | {params / 1e6:.3f}M | {macs / 1e6:.1f}M | "
                f"{paper_ops / PAPER_FLOPS_UNIT:.1f}M (2^20) | {ref_params} | {ref_flops} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
