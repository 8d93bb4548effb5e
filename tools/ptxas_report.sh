#!/usr/bin/env bash
# Compile one CUDA source of csrc/cuda for one architecture, without a GPU and without building the
# extension, and print ptxas's per-kernel registers / spills / shared memory; with --sass, also
# dump the SASS (cuobjdump) beside the cubin. For quick register and spill checks while editing a
# kernel; the CI gate (benchmarks/resources.py) reads the built kpfast/_C.so instead.
#   tools/ptxas_report.sh csrc/cuda/loss.cu [--arch 90] [--sass]
set -euo pipefail
src=${1:?usage: tools/ptxas_report.sh csrc/cuda/FILE.cu [--arch 90] [--sass]}
shift
arch=90
sass=0
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arch=$2; shift 2 ;;
    --sass) sass=1; shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
includes=$(python - <<'PY' 2>/dev/null
import os, torch.utils.cpp_extension as c
paths = c.include_paths(device_type="cuda")
try:  # CUDA library headers shipped in the nvidia wheels (CUDA 13 builds of torch)
    import nvidia
    paths += [os.path.join(p, "cu13", "include") for p in nvidia.__path__]
except ImportError:
    pass
print(" ".join("-I" + p for p in paths))
PY
)
target=$(python -c "import re; m = re.search(r'TORCH_TARGET = \((\d+), (\d+)\)', open('setup.py').read()); print(f'0x{int(m[1]):02x}{int(m[2]):02x}000000000000')")
out=${TMPDIR:-/tmp}/kpfast_$(basename "$src" .cu)_sm$arch.cubin
# shellcheck disable=SC2086
"$CUDA_HOME/bin/nvcc" -std=c++17 -O3 -lineinfo -arch=sm_$arch -cubin -Icsrc $includes \
  -DTORCH_TARGET_VERSION=$target -DKPFAST_WITH_CUDA -DKPFAST_CUDA_ARCHES=$arch \
  -Xptxas -v -o "$out" "$src" 2>&1 | grep -E "error|warning|Compiling entry|Used|spill" | sed -E 's/ptxas info *: //'
echo "cubin: $out"
if [ "$sass" = 1 ]; then
  # cuobjdump ships with the full toolkit; Triton's wheel carries one too (a compiler-only CUDA has none).
  cuobjdump="$CUDA_HOME/bin/cuobjdump"
  [ -x "$cuobjdump" ] || cuobjdump=$(python -c "import os, triton; print(os.path.join(os.path.dirname(triton.__file__), 'backends/nvidia/bin/cuobjdump'))")
  "$cuobjdump" -sass "$out" > "${out%.cubin}.sass"
  echo "sass: ${out%.cubin}.sass"
fi
