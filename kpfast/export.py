"""``python -m kpfast.export --checkpoint PATH --format onnx``: export the network.

The exported graph takes normalised crops ``images (N, 3, H, W)`` (H, W from the config's
input size, N dynamic) and returns ``heatmaps (N, K, H/4, W/4)`` (plus ``visibility (N, K)``
logits when the model has that head). Decoding, flip test and the mapping to image space stay
outside the graph (kpfast.ops / kpfast.geometry).

``--weights NAME|PATH|URL`` exports pretrained weights instead of a training checkpoint (e.g.
MMPose's published Lite-HRNet checkpoints, docs/pretrained.md); --config/--set choose the rest
(``--set data.input_size=[256,192]`` where the weights are not a published checkpoint).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from kpfast.cli import run_cli
from kpfast.engine.arguments import add_config_arguments, add_weights_arguments, check_weights_arguments, load_weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.export", description=__doc__.split("\n\n")[0])
    add_weights_arguments(parser, "export")
    parser.add_argument("--format", choices=("onnx",), default="onnx")
    parser.add_argument("--output", default=None, help="output file (default: next to the checkpoint or weights "
                        "file, .onnx; for a published name or a URL, <its file name>.onnx here)")
    parser.add_argument("--opset", type=int, default=17)
    add_config_arguments(parser, flags=())
    parser.add_argument("--no-check", action="store_true", help="skip the onnx checker")
    return parser


def resolve_output(checkpoint: str | Path, output: str | Path | None, config_file: str | Path | None = None) -> Path:
    """The ONNX file to write; never the checkpoint (or weights) itself, never the --config file,
    never a directory, never a file of a training run (the output rule of kpfast.outputs).

    Paths are compared resolved (symlinks, ``..``) and, when the output exists, by inode, so
    ``--output ck.pt``, ``--output ./dir/../ck.pt``, a link to the checkpoint, or a checkpoint
    named ``*.onnx`` with the default output are all refused before anything is written.
    """
    from kpfast.outputs import OutputGuard

    checkpoint = Path(checkpoint)
    target = Path(output) if output else checkpoint.with_suffix(".onnx")
    guard = OutputGuard()
    guard.protect(checkpoint, "the checkpoint")
    guard.protect(config_file, "the --config file")
    if output:
        return guard.check(target, "--output")
    return guard.check(target, "the default output (the checkpoint with .onnx)", advice="pass an --output file")


def export_source(args) -> Path:
    """The file the default output is named after: the checkpoint, the weights file, or for a
    published name or a URL its file name in the current directory."""
    if args.checkpoint is not None:
        return Path(args.checkpoint)
    from kpfast.models.pretrained import known_weights

    known = known_weights(args.weights)
    if known is not None and not Path(args.weights).exists():
        return Path(known.filename)
    if args.weights.startswith(("http://", "https://")):
        return Path(args.weights.rsplit("/", 1)[-1].split("?")[0] or "weights.pth")
    return Path(args.weights)


def require_onnx() -> None:
    """ONNX export needs the ``onnx`` package, which is only in kpfast's test extra."""
    if importlib.util.find_spec("onnx") is None:
        raise SystemExit("error: ONNX export needs the onnx package, which is not installed: "
                         "pip install onnx")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    check_weights_arguments(args)
    source = export_source(args)
    output = resolve_output(source, args.output, args.config)
    require_onnx()
    import torch

    from kpfast.outputs import atomic_write_bytes

    loaded = load_weights(args, check_machine=False)
    config = loaded.config
    model = loaded.model.eval()
    has_visibility = config.model.visibility_head

    class Exported(torch.nn.Module):
        """Dict outputs -> a tuple, which ONNX export needs."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            out = self.inner(images)
            return (out["heatmaps"], out["visibility"]) if has_visibility else out["heatmaps"]

    h, w = config.data.input_size
    example = torch.zeros(1, 3, h, w)
    names = ["heatmaps", "visibility"] if has_visibility else ["heatmaps"]
    import io

    buffer = io.BytesIO()
    torch.onnx.export(
        Exported(model),
        (example,),
        buffer,
        input_names=["images"],
        output_names=names,
        dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        opset_version=args.opset,
        dynamo=False,
    )
    payload = buffer.getvalue()
    if not args.no_check:
        import onnx

        onnx.checker.check_model(onnx.load_from_string(payload))
    output = resolve_output(source, output, args.config)  # again: the paths may have changed meanwhile
    atomic_write_bytes(output, payload)
    print(f"exported {config.model.name} ({h}x{w} input) to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
