"""The measured effect of ``eval.protocol`` (kpfast vs MMPose 1.3.2) on COCO keypoint AP.

    python benchmarks/protocol_effect.py [--coco-sample PATH] [--epochs 150] [--checkpoint last.pt]

Evaluates one network on the coco_sample photos four times: ground-truth boxes and the
detector's boxes, each under both protocols (docs/pretrained.md, "Evaluation protocols"), and
prints a Markdown table (AP, AP50, AP75, AR, and how many instances reach COCOeval). Without
--checkpoint it first trains the shipped ``coco_sample_overfit`` config for --epochs epochs on
the CPU (a network that has seen these photos: its AP is high, so that the protocols' choices,
not noise, decide the differences).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpfast.codecs import crop_convention  # noqa: E402
from kpfast.engine.checkpointer import model_from_checkpoint  # noqa: E402
from kpfast.engine.checkpointer import load_training_checkpoint  # noqa: E402
from kpfast.engine.config import apply_overrides, config_from_dict, config_to_dict, load_config  # noqa: E402
from kpfast.engine.evaluation import evaluate_model, load_coco_gt  # noqa: E402

DETECTIONS = "detections/person_detections_val2017.json"


def coco_sample(given: str | None) -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in [given, os.environ.get("KPFAST_COCO_SAMPLE"), here.parent / "shared" / "data" / "coco_sample",
                      here.parents[1] / "shared" / "data" / "coco_sample"]:
        if candidate and (Path(candidate) / "annotations" / "person_keypoints_val2017.json").is_file():
            return Path(candidate)
    raise SystemExit("error: --coco-sample: no coco_sample folder found (set it or $KPFAST_COCO_SAMPLE)")


def train_overfit(root: Path, epochs: int, out: Path) -> Path:
    """last.pt of the coco_sample_overfit recipe trained ``epochs`` epochs into ``out``."""
    from kpfast.engine.trainer import Trainer

    config = load_config("coco_sample_overfit", [f"data.root={root}", f"train.epochs={epochs}",
                                                 f"train.output_dir={out}", f"train.eval_interval={epochs}",
                                                 "train.visualize_samples=0", "train.device=cpu"])
    with contextlib.redirect_stdout(io.StringIO()):
        result = Trainer(config, log=lambda text: None).train()
    return result.run_dir / "last.pt"


def measure(checkpoint: Path, root: Path) -> list[tuple[str, str, dict]]:
    import torch

    state = load_training_checkpoint(checkpoint)
    stored = config_to_dict(config_from_dict(state["config"]))
    rows = []
    for boxes, box_overrides in (("ground truth", ["data.use_gt_boxes=true"]),
                                 ("detector", ["data.use_gt_boxes=false", f"data.detections={root / DETECTIONS}"])):
        for protocol in ("kpfast", "mmpose"):
            config = config_from_dict(apply_overrides(stored, [f"data.root={root}", "train.device=cpu",
                                                               "data.num_workers=0", f"eval.protocol={protocol}",
                                                               *box_overrides]))
            model = model_from_checkpoint(state, config).eval()
            data = _data(config)
            metrics = evaluate_model(model, data.val, config, torch.device("cpu"), dataset_info=data.info,
                                     coco_gt=load_coco_gt(data.val.ann_file))
            rows.append((boxes, protocol, metrics))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco-sample", default=None, help="the coco_sample folder (default: ../shared/data/...)")
    parser.add_argument("--epochs", type=int, default=150, help="overfit epochs when no --checkpoint is given")
    parser.add_argument("--checkpoint", default=None, help="a kpfast checkpoint to measure instead of training one")
    args = parser.parse_args(argv)
    root = coco_sample(args.coco_sample)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(args.checkpoint) if args.checkpoint else train_overfit(root, args.epochs, Path(tmp))
        rows = measure(checkpoint, root)
    print("| boxes | protocol | AP | AP50 | AP75 | AR | instances -> results |")
    print("|---|---|---|---|---|---|---|")
    for boxes, protocol, m in rows:
        print(f"| {boxes} | {protocol} | {m['AP']:.4f} | {m['AP50']:.4f} | {m['AP75']:.4f} | {m['AR']:.4f} | "
              f"{m['num_instances']} -> {m['num_results']} |")
    return 0


def _data(config):
    """The evaluation split of ``config``, with its protocol's ground-truth box clip."""
    from kpfast.data import build_data

    return build_data(config.data, num_keypoints=config.model.num_keypoints, convention=crop_convention(config.loss.encoding),
                      seed=config.train.seed, train=False, protocol=config.eval.protocol)


if __name__ == "__main__":
    sys.exit(main())

