#!/usr/bin/env bash
# One command for a GPU machine: build, test, sanitize, measure; results under $OUT.
#
#   benchmarks/gpu_suite.sh [--no-install] [--quick] [--out DIR]
#
# Made for a fresh, offline GPU machine (Python 3.12, torch 2.11 cu130, Triton 3.6, no
# pycocotools/albumentations/onnx, 16 cores) and a 15-minute lease: everything finishes within
# SUITE_BUDGET seconds (default 540 = 9 minutes), each step under its own `timeout`, so one
# rerun still fits. Steps run in order of value: a lease that ends early still returns the
# first ones. Steps that need a GPU (or a tool) are skipped with the reason when it is absent,
# so the script also runs end to end on a CPU-only machine (CI runs it so).
#
# Steps (each logs to $OUT/<step>.log; $OUT/summary.json and $OUT/summary.md say what ran, with
# the device, driver, torch, Triton and CUDA versions):
#   install       pip install --no-build-isolation --no-deps . (MAX_JOBS=16, TORCH_CUDA_ARCH_LIST =
#                 the local GPU's arch only), then the built kpfast/_C*.so is copied into the
#                 source tree, which the tests import (pytest runs from the repository root)
#   wheels        pip install --no-deps --no-index .gpu-wheels/*.whl when there are any (torchvision
#                 and pillow for the loader's nvJPEG decode; the GPU machine is offline)
#   smoke         under 3 minutes from cold caches, the riskiest cases: python -m kpfast.info
#                 --json ($OUT/info.json: versions, driver, runtime, capability, arches, self-test),
#                 the sanitizer cases run plainly on the cuda backend, and the cuda tests of CUDA-graph
#                 capture, launcher constants (sides, K, instances of 1), misaligned / strided /
#                 expanded inputs, the build-vs-device check and two GPUs
#   gpu-tests     the remaining cuda-backend tests (ops, graphs, extension, backends)
#   triton-tests  every Triton test on the GPU, in parallel where pytest-xdist is installed
#   train-step    Lite-HRNet-18 train step, B=64 256x192 bf16, kpfast ops vs the reference ops,
#                 and the share of the step in heatmap work (benchmarks/test_bench_train_step.py)
#   train-epoch   python -m kpfast.train --device cuda, one epoch of the synthetic data, samples/s
#                 ($OUT/train_epoch.json; benchmarks/train_epoch.py)
#   loader-gpu    the data.decode_device: cuda device half (grid_sample warp + normalise, photometric)
#                 on the GPU against the same code on CPU tensors, its samples/s and host CPU per
#                 sample; the nvJPEG decode and the whole device half when torchvision is installed,
#                 else "skipped: torchvision missing" in the log
#                 ($OUT/loader_gpu.json; benchmarks/gpu_loader_check.py)
#   memcheck-*    compute-sanitizer --tool memcheck on the sanitizer cases, cuda and triton
#   racecheck-*   compute-sanitizer --tool racecheck on the same
#   benchmarks    python -m pytest benchmarks (render, loss, decode) with results JSON
#   resources     the AOT gate and the static resource table (no GPU needed: last)
# Triton's compiled kernels persist in $OUT/triton-cache (TRITON_CACHE_DIR): a rerun, and every
# step after the first that compiles a kernel, finds it there.
set -u
cd "$(dirname "$0")/.."

OUT=${OUT:-./gpu-out}
INSTALL=1
QUICK=0
while [ $# -gt 0 ]; do
  case "$1" in
    --no-install) INSTALL=0 ;;
    --quick) QUICK=1 ;;
    --out) OUT=$2; shift ;;
    *) echo "usage: $0 [--no-install] [--quick] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
BUDGET=${SUITE_BUDGET:-540}
PYTHON=${PYTHON:-python}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS="$OUT/steps.tsv"
: > "$STEPS"
unset TRITON_INTERPRET  # real GPU kernels, or nothing (the interpreter tests are CI's job)
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$OUT/triton-cache}
mkdir -p "$TRITON_CACHE_DIR"
START=$SECONDS

record() {  # name status seconds reason
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS"
  echo "[gpu_suite] $1: $2 ($3 s) $4"
}

# run NAME CAP_SECONDS CMD...: runs under `timeout`, capped by what is left of the budget.
run() {
  local name=$1 cap=$2; shift 2
  local left=$((BUDGET - (SECONDS - START) - 10))
  if [ "$left" -lt 15 ]; then record "$name" skipped 0 "suite budget ($BUDGET s) spent"; return; fi
  [ "$cap" -gt "$left" ] && cap=$left
  local t0=$SECONDS
  timeout --kill-after=10 "$cap" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local took=$((SECONDS - t0))
  if [ $rc -eq 0 ]; then record "$name" passed "$took" ""
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then record "$name" timeout "$took" "over $cap s; see $name.log"
  else record "$name" failed "$took" "exit $rc; see $name.log"
  fi
}

GPU_REASON=""
if ! command -v nvidia-smi > /dev/null 2>&1; then GPU_REASON="no GPU (nvidia-smi not found)"
elif ! $PYTHON -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2> /dev/null; then
  GPU_REASON="no GPU (torch.cuda.is_available() is False)"
fi
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2> /dev/null || true)

# install ----------------------------------------------------------------------------------
if [ $INSTALL -eq 0 ]; then record install skipped 0 "--no-install"
else
  ARCH=""
  [ -z "$GPU_REASON" ] && ARCH=$($PYTHON -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  install() {
    MAX_JOBS=16 TORCH_CUDA_ARCH_LIST="$ARCH" KPFAST_BUILD_CUDA=$([ -n "$ARCH" ] && echo 1 || echo 0) \
      $PYTHON -m pip install --no-build-isolation --no-deps -v . || return 1
    # The tests import the source tree: give it the extension just built.
    local so
    so=$(cd / && $PYTHON -c "import importlib.util as u; print(u.find_spec('kpfast._C').origin)") || return 1
    cp "$so" kpfast/
  }
  export -f install
  export PYTHON ARCH
  run install 300 bash -c install  # (a function: `timeout` runs commands only)
fi

# wheels: optional packages the offline GPU machine lacks (torchvision for the nvJPEG decode),
# carried in .gpu-wheels/ (git-ignored; benchmarks/README.md says how to fill it) ----------------
WHEELS=${GPU_WHEELS:-.gpu-wheels}
if ! ls "$WHEELS"/*.whl > /dev/null 2>&1; then record wheels skipped 0 "no wheels in $WHEELS"
else run wheels 120 $PYTHON -m pip install --no-deps --no-index "$WHEELS"/*.whl
fi

# smoke: the riskiest cases first ----------------------------------------------------------
PYTEST="$PYTHON -m pytest -q -p no:cacheprovider"
SMOKE_TESTS="tests/test_gpu_graphs.py tests/ops/test_launcher_constants.py tests/ops/test_layouts.py \
tests/test_cuda_compat.py tests/test_multi_gpu.py"
smoke() {
  local status=0
  echo "== python -m kpfast.info --json"
  $PYTHON -m kpfast.info --json > "$OUT/info.json" || status=1
  echo "== sanitizer cases (cuda backend, no tool)"
  if [ -n "$GPU_REASON" ]; then echo "skipped: $GPU_REASON"
  else $PYTHON benchmarks/sanitizer_cases.py --backend cuda > /dev/null || status=1
  fi
  echo "== tests"
  $PYTEST $SMOKE_TESTS -m "not triton and not slow" --junitxml="$OUT/smoke.xml" || status=1
  return $status
}
export -f smoke
export PYTHON OUT GPU_REASON PYTEST SMOKE_TESTS
run smoke 180 bash -c smoke

# GPU tests --------------------------------------------------------------------------------
XDIST=""
$PYTHON -c "import xdist" 2> /dev/null && XDIST="-n 8"
if [ -n "$GPU_REASON" ]; then record gpu-tests skipped 0 "$GPU_REASON"; record triton-tests skipped 0 "$GPU_REASON"
else
  run gpu-tests 200 $PYTEST tests/ops tests/test_gpu_graphs.py tests/test_multi_gpu.py tests/test_extension.py \
    tests/test_backends.py -m "not triton and not slow" --ignore tests/ops/test_launcher_constants.py \
    --ignore tests/ops/test_layouts.py --junitxml="$OUT/gpu-tests.xml"
  run triton-tests 240 $PYTEST $XDIST tests/ops tests/triton_kernels tests/test_gpu_graphs.py tests/test_multi_gpu.py \
    tests/test_backends.py -m "triton and not slow" --junitxml="$OUT/triton-tests.xml"
fi

# end-to-end figures -----------------------------------------------------------------------
if [ -n "$GPU_REASON" ]; then
  record train-step skipped 0 "$GPU_REASON (GPU figures only)"; record train-epoch skipped 0 "$GPU_REASON"
  record loader-gpu skipped 0 "$GPU_REASON"
else
  KPFAST_BENCH_COMMAND="benchmarks/gpu_suite.sh" run train-step 150 $PYTEST benchmarks/test_bench_train_step.py \
    --benchmark-json="$OUT/train_step.json"
  run train-epoch 150 $PYTHON benchmarks/train_epoch.py --device cuda --out "$OUT/train_epoch.json"
  run loader-gpu 60 $PYTHON benchmarks/gpu_loader_check.py --out "$OUT/loader_gpu.json"
fi

# compute-sanitizer ------------------------------------------------------------------------
for tool in memcheck racecheck; do
  for backend in cuda triton; do
    if [ -n "$GPU_REASON" ]; then record "$tool-$backend" skipped 0 "$GPU_REASON"
    elif [ -z "$SANITIZER" ]; then record "$tool-$backend" skipped 0 "compute-sanitizer not found"
    else
      run "$tool-$backend" 90 "$SANITIZER" --tool "$tool" --error-exitcode 1 $PYTHON benchmarks/sanitizer_cases.py \
        --backend "$backend"
    fi
  done
done

# benchmarks -------------------------------------------------------------------------------
if [ -n "$GPU_REASON" ]; then record benchmarks skipped 0 "$GPU_REASON (GPU figures only)"
else
  KPFAST_BENCH_COMMAND="benchmarks/gpu_suite.sh" run benchmarks 180 $PYTEST benchmarks/test_bench_render.py \
    benchmarks/test_bench_loss.py benchmarks/test_bench_decode.py --benchmark-json="$OUT/benchmarks.json"
fi
cp benchmarks/results/*.json "$OUT/" 2> /dev/null || true

# static resources (AOT gate; no GPU needed, CI runs it too) ---------------------------------
if [ $QUICK -eq 1 ]; then record resources skipped 0 "--quick (CI runs the AOT gate)"
else
  run resources 150 $PYTHON benchmarks/resources.py --label after --out "$OUT/resources" --check
fi

# summary ----------------------------------------------------------------------------------
$PYTHON - "$OUT" "$((SECONDS - START))" "$GPU_REASON" <<'EOF'
import json, sys
out, seconds, gpu_reason = sys.argv[1], int(sys.argv[2]), sys.argv[3]
steps = []
for line in open(f"{out}/steps.tsv"):
    name, status, took, reason = line.rstrip("\n").split("\t")
    steps.append(dict(step=name, status=status, seconds=int(took), reason=reason))
sys.path[:0] = ["benchmarks", "."]
try:
    import torch
    from common import environment

    env = environment(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
except Exception as error:  # the summary is written whatever broke
    env = dict(error=f"{type(error).__name__}: {error}")
summary = dict(seconds=seconds, gpu=gpu_reason or "available", environment=env, steps=steps,
               ok=all(s["status"] in ("passed", "skipped") for s in steps))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
lines = [f"# gpu_suite: {'OK' if summary['ok'] else 'FAILED'} in {seconds} s (GPU: {summary['gpu']})", "",
         ", ".join(f"{k} {v}" for k, v in env.items()), "",
         "| step | status | s | reason |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['reason']} |" for s in steps]
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if summary["ok"] else 1)
EOF
