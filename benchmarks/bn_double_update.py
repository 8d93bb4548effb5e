"""Does MMPose's double BatchNorm update in Lite-HRNet's fuse layers change a fine-tune?

    python benchmarks/bn_double_update.py --out benchmarks/results/bn_double_update.json

MMPose's (and the official) ``LiteHRModule`` evaluates ``fuse_layers[i][0]`` twice per forward
pass for every output branch ``i >= 1``; kpfast evaluates it once and doubles the result
(kpfast/models/litehrnet.py, ``LiteHRModule._fuse``; docs/pretrained.md, "Fine-tuning and
BatchNorm statistics"). The outputs and gradients are the same; the BatchNorm layers inside
those modules update their running statistics twice per step under MMPose. This script
measures what that changes in a fine-tune:

1. a starting point: the default config (narrow Lite-HRNet on the synthetic set) trained for
   ``--pretrain-epochs``, standing in for a pretrained checkpoint;
2. for each ``--finetune-epochs`` length, three fine-tunes from it on another draw of the
   synthetic set (``synthetic_seed`` 1), with the same seed, data order and schedule:

   ``kpfast``   kpfast's forward (one evaluation, one update per step);
   ``mmpose``   MMPose's arithmetic emulated: ``fuse_layers[i][0]`` evaluated twice, as there;
   ``momentum`` kpfast's forward with those layers' momentum ``m`` set to ``2m - m^2``, the
                one-update equivalent of two updates (what docs/pretrained.md recommends for
                reproducing MMPose's statistics exactly).

Reported per arm: COCO AP on the fine-tune's validation set (ground-truth boxes, flip test),
and against the ``mmpose`` arm: the largest difference of any learnable weight (0 means the
training trajectories are the same) and of the affected layers' running mean / variance
(relative to their magnitude).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import torch

from kpfast.models.litehrnet import LiteHRModule

ROOT = Path(__file__).resolve().parent.parent


def _fuse_evaluating_branch0_twice(self, out):
    """LiteHRModule._fuse with MMPose's evaluation count: ``fuse_layers[i][0](out[0])`` computed
    twice (so its BatchNorm layers update twice), the same sums in the same order as kpfast's."""
    branch0 = out[0]
    fused = []
    for i in range(self.num_branches):
        row = self.fuse_layers[i]
        y = branch0 + branch0 if i == 0 else row[0](branch0) + row[0](branch0)
        for j in range(1, self.num_branches):
            y = y + (out[j] if j == i else row[j](out[j]))
        if i == 0:
            branch0 = y
        fused.append(self.relu(y))
    return fused


def doubly_updated_norms(model: torch.nn.Module) -> dict[str, torch.nn.BatchNorm2d]:
    """The BatchNorm layers MMPose updates twice per step: those inside ``fuse_layers[i][0]``, i >= 1."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, LiteHRModule) and module.with_fuse:
            for i in range(1, module.num_branches):
                for sub, norm in module.fuse_layers[i][0].named_modules():
                    if isinstance(norm, torch.nn.BatchNorm2d):
                        found[f"{name}.fuse_layers.{i}.0.{sub}"] = norm
    return found


def _config(output_dir: str, epochs: int, overrides: list[str]):
    from kpfast.engine.config import load_config

    return load_config("default", [f"train.output_dir={output_dir}", f"train.epochs={epochs}", "train.top_k=0",
                                   f"train.eval_interval={epochs}", "train.visualize_samples=0", *overrides])


def _quiet(_text: str) -> None:
    pass


def _finetune(tmp: str, epochs: int, lr: float, start_state: dict, arm: str) -> dict:
    from kpfast.engine.trainer import Trainer

    trainer = Trainer(_config(tmp, epochs, ["data.synthetic_seed=1", f"optim.lr={lr}", "schedule.warmup_epochs=0"]),
                      log=_quiet)
    trainer.model.load_state_dict(start_state)
    torch._foreach_copy_(trainer.step.buffer_backup, trainer.step.buffers)
    norms = doubly_updated_norms(trainer.model)
    if arm == "mmpose":
        for module in trainer.model.modules():
            if isinstance(module, LiteHRModule) and module.with_fuse:
                module._fuse = types.MethodType(_fuse_evaluating_branch0_twice, module)
    elif arm == "momentum":
        for norm in norms.values():
            norm.momentum = 2 * norm.momentum - norm.momentum ** 2
    result = trainer.train()
    return {"AP": result.final_metrics["AP"], "steps": result.global_step, "norms": list(norms),
            "state": {k: v.detach().clone() for k, v in trainer.model.state_dict().items()},
            "device": trainer.device}


def _compare(arms: dict) -> dict:
    """Per arm: AP, steps, and the largest differences from the ``mmpose`` arm."""
    reference, names = arms["mmpose"]["state"], arms["mmpose"]["norms"]
    out = {}
    for arm, data in arms.items():
        state = data["state"]
        weights = max(float((state[k] - reference[k]).abs().max()) for k in reference
                      if reference[k].is_floating_point() and "running" not in k)
        row = {"AP": data["AP"], "steps": data["steps"], "max_weight_diff_vs_mmpose": weights}
        for stat in ("running_mean", "running_var"):
            row[f"max_rel_{stat}_diff_vs_mmpose"] = max(
                float(((state[f"{n}.{stat}"] - reference[f"{n}.{stat}"]).abs()
                       / reference[f"{n}.{stat}"].abs().clamp_min(1e-3)).max()) for n in names)
        out[arm] = row
    return out


def run(args) -> dict:
    from kpfast.engine.trainer import Trainer

    torch.manual_seed(0)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Trainer(_config(tmp, args.pretrain_epochs, []), log=_quiet)
        pre_ap = pre.train().final_metrics.get("AP")
        start_state = {k: v.detach().clone() for k, v in pre.model.state_dict().items()}
        device, norms = pre.device, len(doubly_updated_norms(pre.model))
        del pre
        runs = {}
        for epochs in args.finetune_epochs:
            arms = {arm: _finetune(tmp, epochs, args.lr, start_state, arm) for arm in ("kpfast", "mmpose", "momentum")}
            runs[f"{epochs}_epochs"] = _compare(arms)
            print(json.dumps({f"{epochs}_epochs": runs[f"{epochs}_epochs"]}), flush=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import environment

    return {"environment": environment(device), "pretrain_epochs": args.pretrain_epochs, "pretrain_AP": pre_ap,
            "finetune_lr": args.lr, "doubly_updated_norm_layers": norms, "finetunes": runs,
            "wall_s": round(time.perf_counter() - started, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--finetune-epochs", type=int, nargs="+", default=[1, 3],
                        help="fine-tune lengths to measure (each: the three arms)")
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tune learning rate")
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
