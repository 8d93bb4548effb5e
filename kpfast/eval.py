"""``python -m kpfast.eval --checkpoint PATH``: COCO keypoint AP (and PCK/EPE with GT boxes).

The checkpoint's stored config is used unless --config is given; any key can be changed with
--set (e.g. ``--set eval.flip_test=false --set data.use_gt_boxes=false
--set data.detections=dets.json --set eval.decoder=udp``). ``--weights NAME|PATH|URL``
evaluates pretrained weights instead of a training checkpoint, e.g. MMPose's published
Lite-HRNet checkpoints under MMPose's protocol (``--set eval.protocol=mmpose``,
docs/pretrained.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kpfast.cli import HelpFormatter, run_cli
from kpfast.engine.arguments import add_config_arguments, add_weights_arguments, load_weights


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.eval", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    add_weights_arguments(parser, "evaluate")
    add_config_arguments(parser, flags=("batch_size", "data_root", "device", "ops_backend", "workers"))
    parser.add_argument("--results", default=None, help="write COCO-format predictions JSON here; never an input "
                        "file or a file in a run folder (default: not written)")
    parser.add_argument("--metrics", default=None, help="write the metrics JSON here; never an input file or a "
                        "file in a run folder (default: not written)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kpfast.data import build_data
    from kpfast.codecs import crop_convention
    from kpfast.engine.evaluation import Evaluator
    from kpfast.outputs import OutputGuard, atomic_write_bytes
    from kpfast.engine.trainer import configure_cpu_threads, select_device

    guard = OutputGuard()
    guard.protect(args.checkpoint, "the checkpoint")
    guard.protect(args.weights, "the --weights file")
    guard.protect(args.config, "the --config file")
    _check_outputs(guard, args)  # before the checkpoint is even read: a bad path costs nothing
    loaded = load_weights(args)
    config = loaded.config
    if args.weights is not None:  # what was read from the file, and what not (docs/pretrained.md)
        print(f"weights: {loaded.summary}")
    guard.protect(config.data.detections, "the detections file (data.detections)")
    if args.batch_size is not None:  # --batch_size means the evaluation batch here
        config.eval.batch_size = args.batch_size
    device = select_device(config.train.device)
    configure_cpu_threads(config, device)
    model = loaded.model.to(device).eval()
    data = build_data(config.data, num_keypoints=config.model.num_keypoints, convention=crop_convention(config.loss.encoding),
                      seed=config.train.seed, train=False, protocol=config.eval.protocol)
    guard.protect(data.val.ann_file, "the annotation file")
    guard.protect_folder(data.val.image_dir, "the image folder")
    _check_outputs(guard, args)
    results: list = []
    metrics = Evaluator(data.val, config, device, data.info)(model, results_out=results)
    print(metrics["summary"])
    extra = ""
    if "PCK" in metrics:
        extra = f", PCK@{config.eval.pck_threshold:g} {metrics['PCK']:.4f}, EPE {metrics['EPE']:.2f} px"
    print(f"COCO keypoint AP {metrics['AP']:.4f} (AP50 {metrics['AP50']:.4f}, AP75 {metrics['AP75']:.4f}, "
          f"APm {metrics['APm']:.4f}, APl {metrics['APl']:.4f}, AR {metrics['AR']:.4f}){extra}")
    guard.recheck()  # again: the paths may have changed during the evaluation
    if args.results:
        atomic_write_bytes(Path(args.results), json.dumps(results).encode())
    if args.metrics:
        payload = {k: v for k, v in metrics.items() if k != "summary"}
        atomic_write_bytes(Path(args.metrics), json.dumps(payload, indent=2).encode())
    return 0


def _check_outputs(guard, args) -> None:
    for flag, path in (("--results", args.results), ("--metrics", args.metrics)):
        if path:
            guard.check(path, flag)


if __name__ == "__main__":
    sys.exit(run_cli(main))
