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
    wheels = tmp_path / "no-wheels"  # (a developer's own .gpu-wheels/ must not be installed here)
    env = dict(os.environ, PYTHON=sys.executable, SUITE_BUDGET="300", GPU_WHEELS=str(wheels))
    env.pop("TRITON_INTERPRET", None)
    out = tmp_path / "gpu-out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--no-install", "--quick", "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    gpu_steps = ["gpu-tests", "triton-tests", "train-step", "train-epoch", "loader-gpu", "memcheck-cuda",
                 "memcheck-triton",
                 "racecheck-cuda", "racecheck-triton", "benchmarks"]
    assert list(steps) == ["install", "wheels", "smoke"] + gpu_steps + ["resources"]
    assert steps["install"]["status"] == "skipped" and steps["install"]["reason"] == "--no-install"
    assert steps["wheels"]["status"] == "skipped" and steps["wheels"]["reason"] == f"no wheels in {wheels}"
    # the smoke step runs on CPU too: kpfast.info, and its tests on the CPU backends (GPU ones skip)
    assert steps["smoke"]["status"] == "passed", (out / "smoke.log").read_text()[-3000:]
    smoke_log = (out / "smoke.log").read_text()
    assert "sanitizer cases (cuda backend, no tool)" in smoke_log and "skipped: no GPU" in smoke_log
    assert " passed" in smoke_log and "failed" not in smoke_log
    report = json.loads((out / "info.json").read_text())
    assert report["versions"]["torch"] == torch.__version__
    assert set(report["cuda_compatibility"]) == {"driver", "runtime", "arches", "devices"}
    for step in gpu_steps:
        assert steps[step]["status"] == "skipped" and "no GPU" in steps[step]["reason"], steps[step]
    assert summary["environment"]["torch"] == torch.__version__ and "driver" in summary["environment"]
    assert (Path(os.environ.get("TRITON_CACHE_DIR", out / "triton-cache"))).is_dir()
    assert summary["ok"] and (out / "summary.md").read_text().startswith("# gpu_suite: OK")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU exit of the driver")
def test_sanitizer_driver_refuses_to_run_without_a_gpu():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sanitizer_cases.py")], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2 and "no GPU" in proc.stderr


def test_sanitizer_layout_cases_run_on_the_cpu_backend():
    """The misaligned / strided / expanded cases the sanitizers run, here on the cpu kernels (a GPU
    run takes them through cuda and triton): every op and dtype runs."""
    from kpfast import _extension

    if not _extension.is_loaded():
        pytest.skip(_extension.unavailable_reason())
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import sanitizer_cases
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    names = sanitizer_cases.layout_cases(torch.device("cpu"), "cpu")
    assert names == [f"{layout} {dtype}" for dtype in (torch.float32, torch.bfloat16, torch.float16)
                     for layout in ("offset", "strided", "expanded")]
