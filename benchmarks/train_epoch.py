"""One training epoch of ``python -m kpfast.train`` on the synthetic dataset, with samples/s.

    python benchmarks/train_epoch.py --device cuda --out results/train_epoch.json

Runs the command a user runs (one epoch, the default config: Lite-HRNet-18 on the shipped
synthetic data, validation at the end) in a subprocess and reports: ``wall_s`` of the whole
command (start-up, data generation on first use, the epoch and its validation), and the
training throughput ``samples_per_s`` from the trainer's own per-step times (batch size over the
median step time of its progress lines, data loading included). The JSON names the device,
driver, torch, Triton and CUDA versions (benchmarks/common.py environment)."""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from common import environment  # noqa: E402

STEP = re.compile(r" step (\d+)/(\d+) .* data (\d+)ms step (\d+)ms")


def step_times(log: str) -> list[tuple[float, float]]:
    """(data, step) seconds of each progress line of the trainer's log."""
    return [(int(m.group(3)) / 1e3, int(m.group(4)) / 1e3) for m in map(STEP.search, log.splitlines()) if m]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--ops-backend", default="auto")
    parser.add_argument("--out", required=True, help="the results JSON")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (a smoke run)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as runs:
        command = [sys.executable, "-m", "kpfast.train", "--device", args.device, "--epochs", "1", "--batch_size",
                   str(args.batch_size), "--ops-backend", args.ops_backend, "--output_dir", runs,
                   "--set", "train.log_interval=1"]
        if args.max_steps is not None:
            command += ["--set", f"train.max_steps={args.max_steps}"]
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
    log = proc.stdout + proc.stderr
    times = step_times(log)
    steady = [step for _, step in times[1:]] or [step for _, step in times]  # the first step compiles
    record = dict(environment(device), command=" ".join(command[1:]), returncode=proc.returncode, wall_s=wall,
                  steps=len(times), batch_size=args.batch_size,
                  median_step_s=statistics.median(steady) if steady else None,
                  samples_per_s=args.batch_size / statistics.median(steady) if steady else None,
                  log_tail=log[-2000:])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=1))
    print(json.dumps({k: v for k, v in record.items() if k != "log_tail"}, indent=1))
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
