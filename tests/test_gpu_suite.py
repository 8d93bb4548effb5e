"""benchmarks/gpu_suite.sh runs end to end on a machine without a GPU, skipping each GPU step
with its reason, and writes its summary; its helpers (the sanitizer driver) behave there too."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of the suite; a GPU machine runs the real one")
def test_suite_runs_end_to_end_without_a_gpu(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, SUITE_BUDGET="300")
    env.pop("TRITON_INTERPRET", None)
    out = tmp_path / "gpu-out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--no-install", "--quick", "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    assert list(steps) == ["install", "info", "gpu-tests", "resources", "memcheck", "racecheck", "benchmarks"]
    assert steps["install"]["status"] == "skipped" and steps["install"]["reason"] == "--no-install"
    assert steps["info"]["status"] == "passed"
    report = json.loads((out / "info.json").read_text())
    assert report["versions"]["torch"] == torch.__version__
    for step in ("gpu-tests", "memcheck", "racecheck", "benchmarks"):
        assert steps[step]["status"] == "skipped" and "no GPU" in steps[step]["reason"], steps[step]
    assert summary["ok"] and (out / "summary.md").read_text().startswith("# gpu_suite: OK")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit of the driver")
def test_sanitizer_driver_refuses_to_run_without_a_gpu():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sanitizer_cases.py")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "no GPU" in proc.stderr
