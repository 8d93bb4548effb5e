// The CUDA dispatch table: every operator of csrc/ops.cpp with its CUDA kernel.
#include <torch/library.h>

#include "cuda/ops.h"

namespace kpfast {

TORCH_LIBRARY_IMPL(kpfast, CUDA, m) {
  m.impl("render_heatmaps", &render_heatmaps_cuda);
  m.impl("render_heatmaps_backward", &render_heatmaps_backward_cuda);
}

}  // namespace kpfast
