"""``python -m kpfast.train``: train a top-down keypoint model.

With no arguments it trains the small CPU-friendly default (configs/default.yaml) on the
embedded synthetic dataset and prints COCO keypoint AP. Examples::

    python -m kpfast.train
    python -m kpfast.train --config configs/coco_improved.yaml --data_root /data/coco
    python -m kpfast.train --resume runs/my-run/last.pt
    torchrun --nproc_per_node 8 -m kpfast.train --config configs/coco_litehrnet18_256x192.yaml
"""

from __future__ import annotations

import argparse
import signal
import sys

from kpfast.engine.cli import add_config_arguments, resolve_config, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.train", description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--resume", default=None, help="last.pt (or its run directory) to continue from")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kpfast.engine.checkpoint import load_checkpoint
    from kpfast.engine.trainer import Trainer, TrainingDiverged, resolve_resume
    from kpfast.engine import distributed as dist_utils

    stored = None
    if args.resume is not None:
        stored = load_checkpoint(resolve_resume(args.resume))["config"]
    config = resolve_config(args, stored)
    trainer = Trainer(config, resume=args.resume)
    try:
        result = trainer.train()
    except TrainingDiverged as exc:
        trainer.log(f"training stopped: {exc}")
        dist_utils.cleanup_distributed()
        return 3
    if trainer.is_main:
        if result.interrupted:
            print(f"interrupted after step {result.global_step}: resume with "
                  f"python -m kpfast.train --resume {result.run_dir / 'last.pt'}", flush=True)
        else:
            metrics = result.final_metrics
            if metrics:
                print(metrics.get("summary", ""), flush=True)
                print(
                    f"final COCO keypoint AP {metrics['AP']:.4f} (AP50 {metrics['AP50']:.4f}, "
                    f"AP75 {metrics['AP75']:.4f}, "
                    f"AR {metrics['AR']:.4f}); best AP {result.best_ap:.4f}; run dir {result.run_dir}",
                    flush=True,
                )
    dist_utils.cleanup_distributed()
    signum = trainer.stop_signal.received
    return 128 + int(signum) if signum is not None else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
