#!/usr/bin/env bash
# One kpfast._C binary for every torch >= 2.11 (the LibTorch stable ABI), proven both ways:
#   A. a wheel built against torch NEW (default: the CUDA torch of $NEW_PYTHON's environment,
#      with the CUDA kernels, TORCH_CUDA_ARCH_LIST=9.0) passes the op tests in a fresh venv with
#      torch OLD (default: the 2.13.0 CPU wheel);
#   B. a wheel built against torch OLD passes the op tests with torch NEW.
# Each phase prints its wall time. Usage (from the repository root):
#   tools/cross_torch_check.sh [WORK_DIR]
# Environment: NEW_PYTHON (default: the python on PATH, e.g. a venv with the CUDA torch 2.14.1),
#   OLD_TORCH_WHEEL (default /opt/wheels/torch-2.13.0+cpu-...whl), CUDA_HOME (/usr/local/cuda),
#   TESTS (default: "tests/ops tests/test_extension.py"), PYTEST_ARGS (default: -q -x -m "not triton";
#   when set, split on spaces).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-/tmp/kpfast-cross-torch}
NEW_PYTHON=${NEW_PYTHON:-$(command -v python3)}
OLD_TORCH_WHEEL=${OLD_TORCH_WHEEL:-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
TESTS=${TESTS:-"tests/ops tests/test_extension.py"}
if [[ -n "${PYTEST_ARGS:-}" ]]; then read -r -a PYTEST_ARGS <<< "$PYTEST_ARGS"; else PYTEST_ARGS=(-q -x -m "not triton" -p no:cacheprovider); fi
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=${MAX_JOBS:-2}

rm -rf "$WORK"
mkdir -p "$WORK"
phase() { echo; echo "=== $* ($(date +%T))"; PHASE_START=$(date +%s); }
done_phase() { echo "=== done in $(( $(date +%s) - PHASE_START )) s"; }

# The tests run from a copy outside the repository, so that the installed kpfast is imported.
cp -r "$REPO/tests" "$WORK/tests"
cp "$REPO/pyproject.toml" "$WORK/"
run_tests() {  # python, extra PYTHONPATH
  (cd "$WORK" && TORCHINDUCTOR_CACHE_DIR="$WORK/inductor-$RANDOM" PYTHONPATH="$2" \
     "$1" -c "import torch, kpfast; print('torch', torch.__version__, 'kpfast._C', kpfast._extension.build_info(), kpfast._extension.unavailable_reason())" &&
   cd "$WORK" && TORCHINDUCTOR_CACHE_DIR="$WORK/inductor-$RANDOM" PYTHONPATH="$2" "$1" -m pytest $TESTS "${PYTEST_ARGS[@]}")
}
build_wheel() {  # python, output dir, extra env...
  local python=$1 out=$2
  shift 2
  # A copy of the sources, so that no build folder or in-place _C.so of the checkout leaks in.
  rm -rf "$WORK/src" && mkdir -p "$WORK/src"
  (cd "$REPO" && git ls-files -z | xargs -0 cp --parents -t "$WORK/src")
  (cd "$WORK/src" && env "$@" "$python" -m pip wheel --no-build-isolation --no-deps -w "$out" . > "$out.log" 2>&1) ||
    { tail -30 "$out.log"; exit 1; }
  ls -la "$out"/*.whl
}

phase "A1. wheel against $("$NEW_PYTHON" -c 'import torch; print(torch.__version__)') with CUDA kernels (sm_90)"
build_wheel "$NEW_PYTHON" "$WORK/wheel-new" KPFAST_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0
done_phase

phase "A2. fresh venv with $(basename "$OLD_TORCH_WHEEL")"
"$NEW_PYTHON" -m venv "$WORK/venv-old"
"$WORK/venv-old/bin/python" -m pip install -q "$OLD_TORCH_WHEEL" numpy pytest opencv-python-headless setuptools ninja wheel
done_phase

phase "A3. the NEW-torch wheel in the OLD-torch venv: op tests"
"$WORK/venv-old/bin/python" -m pip install -q --no-deps "$WORK"/wheel-new/*.whl
run_tests "$WORK/venv-old/bin/python" ""
done_phase

phase "B1. wheel against the OLD torch (CPU)"
build_wheel "$WORK/venv-old/bin/python" "$WORK/wheel-old"
done_phase

phase "B2. the OLD-torch wheel with the NEW torch: op tests"
"$NEW_PYTHON" -m pip install -q --no-deps --target "$WORK/site-old-wheel" "$WORK"/wheel-old/*.whl
run_tests "$NEW_PYTHON" "$WORK/site-old-wheel"
done_phase

echo
echo "cross-torch check passed: A (built with the newer torch, run with the older) and B (the reverse)"
