#!/usr/bin/env bash
# One command for a GPU machine: build, test, sanitize, benchmark; results under $OUT.
#
#   benchmarks/gpu_suite.sh [--no-install] [--quick] [--out DIR]
#
# Made for a fresh, offline GPU machine (Python 3.12, torch 2.11 cu130, Triton 3.6, no
# pycocotools/albumentations/onnx, 16 cores) and a 15-minute lease: everything finishes within
# SUITE_BUDGET seconds (default 540 = 9 minutes), each step under its own `timeout`, so one
# rerun still fits. Steps that need a GPU (or a tool) are skipped with the reason when it is
# absent, so the script also runs end to end on a CPU-only machine.
#
# Steps (each logs to $OUT/<step>.log; $OUT/summary.json and $OUT/summary.md say what ran):
#   install     pip install --no-build-isolation --no-deps . (MAX_JOBS=16, TORCH_CUDA_ARCH_LIST =
#               the local GPU's arch only), then the built kpfast/_C*.so is copied into the
#               source tree, which the tests import (pytest runs from the repository root)
#   info        python -m kpfast.info --json (versions, build, backends, self-test)
#   gpu-tests   the op tests, the Triton tests and tests/test_gpu_graphs.py (CUDA-graph
#               capture of every op) on the GPU: torch.compile and half precision included
#   resources   the AOT gate and the static resource table (registers/spills) of this build
#   memcheck    compute-sanitizer --tool memcheck on a small case of every CUDA op
#   racecheck   compute-sanitizer --tool racecheck on the same cases
#   benchmarks  python -m pytest benchmarks (render, loss, decode) with results JSON
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
  run install 300 install
fi

# info -------------------------------------------------------------------------------------
run info 60 $PYTHON -m kpfast.info --json
cp "$OUT/info.log" "$OUT/info.json" 2> /dev/null || true

# GPU tests --------------------------------------------------------------------------------
if [ -n "$GPU_REASON" ]; then record gpu-tests skipped 0 "$GPU_REASON"
else
  run gpu-tests 200 $PYTHON -m pytest tests/ops tests/triton_kernels/test_fixes.py tests/test_gpu_graphs.py \
    -q -p no:cacheprovider -m "not slow" --junitxml="$OUT/gpu-tests.xml"
fi

# static resources (AOT gate; no GPU needed) -----------------------------------------------
if [ $QUICK -eq 1 ]; then record resources skipped 0 "--quick (CI runs the AOT gate)"
else
  run resources 150 $PYTHON benchmarks/resources.py --label after --out "$OUT/resources" --check
fi

# compute-sanitizer ------------------------------------------------------------------------
for tool in memcheck racecheck; do
  if [ -n "$GPU_REASON" ]; then record "$tool" skipped 0 "$GPU_REASON"
  elif [ -z "$SANITIZER" ]; then record "$tool" skipped 0 "compute-sanitizer not found"
  else
    run "$tool" 90 "$SANITIZER" --tool "$tool" --error-exitcode 1 $PYTHON benchmarks/sanitizer_cases.py --backend cuda
  fi
done

# benchmarks -------------------------------------------------------------------------------
if [ -n "$GPU_REASON" ]; then record benchmarks skipped 0 "$GPU_REASON (GPU figures only)"
else
  KPFAST_BENCH_COMMAND="benchmarks/gpu_suite.sh" run benchmarks 180 $PYTHON -m pytest benchmarks/test_bench_render.py \
    benchmarks/test_bench_loss.py benchmarks/test_bench_decode.py -q -p no:cacheprovider \
    --benchmark-json="$OUT/benchmarks.json"
  cp benchmarks/results/*.json "$OUT/" 2> /dev/null || true
fi

# summary ----------------------------------------------------------------------------------
$PYTHON - "$OUT" "$((SECONDS - START))" "$GPU_REASON" <<'EOF'
import json, sys
out, seconds, gpu_reason = sys.argv[1], int(sys.argv[2]), sys.argv[3]
steps = []
for line in open(f"{out}/steps.tsv"):
    name, status, took, reason = line.rstrip("\n").split("\t")
    steps.append(dict(step=name, status=status, seconds=int(took), reason=reason))
summary = dict(seconds=seconds, gpu=gpu_reason or "available", steps=steps,
               ok=all(s["status"] in ("passed", "skipped") for s in steps))
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
lines = [f"# gpu_suite: {'OK' if summary['ok'] else 'FAILED'} in {seconds} s (GPU: {summary['gpu']})", "",
         "| step | status | s | reason |", "|---|---|---|---|"]
lines += [f"| {s['step']} | {s['status']} | {s['seconds']} | {s['reason']} |" for s in steps]
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(0 if summary["ok"] else 1)
EOF
