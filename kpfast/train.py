"""``python -m kpfast.train``: train a top-down keypoint model.

With no arguments it trains the small CPU-friendly default (the shipped config ``default``) on
the embedded synthetic dataset and prints COCO keypoint AP. Examples::

    python -m kpfast.train
    python -m kpfast.train --list-configs
    python -m kpfast.train --config coco_improved --data_root /data/coco
    python -m kpfast.train --config my_recipe.yaml
    python -m kpfast.train --resume runs/my-run/last.pt
    python -m kpfast.train --config coco_litehrnet18_256x192 --init-weights litehrnet_18_coco_256x192
    torchrun --nproc_per_node 8 -m kpfast.train --config coco_litehrnet18_256x192 --data_root /data/coco
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kpfast.cli import HelpFormatter, run_cli
from kpfast.engine.arguments import add_config_arguments, resolve_config


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kpfast.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=HelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--resume", default=None,
                        help="last.pt (or its run directory) to continue from; any other checkpoint "
                        "(best.pt, a top-k file, a copied last.pt) starts a new run from its state "
                        "(default: a new run)")
    parser.add_argument("--init-weights", default=None, metavar="NAME|PATH|URL",
                        help="start from pretrained weights (fine-tuning): a published name (docs/pretrained.md), "
                        "a file (MMPose 1.x/0.x, kpfast, a state dict) or a URL; they must fit the config's "
                        "network, except the heads when model.num_keypoints differs (re-initialised and listed "
                        "in the log) (default: the network's own initialisation)")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved, validated config as YAML and exit without training")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from kpfast.engine.checkpointer import (
        check_resume_compatible,
        load_training_checkpoint,
        plan_resume,
        resolve_resume,
    )
    from kpfast.engine.trainer import Trainer, TrainingDiverged
    from kpfast.engine import runtime as dist_utils

    stored = plan = None
    if args.resume is not None and args.init_weights is not None:
        raise ValueError("--init-weights: a resumed run continues its own weights; drop --init-weights or --resume")
    if args.init_weights is not None and int(os.environ.get("WORLD_SIZE", "1")) > 1 \
            and not Path(args.init_weights).is_file():
        raise ValueError(f"--init-weights {args.init_weights}: with several processes pass a local file (every "
                         "process would download at once); fetch it first: python -c \"from kpfast.models.pretrained "
                         f"import fetch_weights; print(fetch_weights('{args.init_weights}'))\"")
    if args.resume is not None:
        resume_path = resolve_resume(args.resume)
        saved = load_training_checkpoint(resume_path)
        stored, plan = saved["config"], plan_resume(resume_path, saved)
        del saved
    # Everything is validated (config values, device, ops backend, resume compatibility) before
    # the Trainer creates the run directory or loads any state.
    config = resolve_config(args, stored)
    if stored is not None:
        check_resume_compatible(stored, config)
    if args.print_config:
        import yaml

        from kpfast.engine.config import config_to_dict

        print(yaml.safe_dump(config_to_dict(config), sort_keys=False), end="")
        return 0
    if plan is None or not plan.in_place:  # a new run directory will be made
        from kpfast.engine.rundir import check_output_dir

        check_output_dir(config.train.output_dir)
    trainer = Trainer(config, resume=args.resume, init_weights=args.init_weights)
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
