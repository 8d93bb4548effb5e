// The CUDA dispatch table: every operator of csrc/ops.cpp with its CUDA kernel.
#include <torch/library.h>

#include "cuda/ops.h"

namespace kpfast {

TORCH_LIBRARY_IMPL(kpfast, CUDA, m) {
  m.impl("render_heatmaps", &render_heatmaps_cuda);
  m.impl("render_heatmaps_backward", &render_heatmaps_backward_cuda);

  // Op 2: fused heatmap loss.
  m.impl("heatmap_loss", &heatmap_loss_cuda);
  m.impl("heatmap_loss_backward", &heatmap_loss_backward_cuda);
  // Op 3: decoding.
  m.impl("decode_heatmaps", &decode_heatmaps_cuda);
  m.impl("soft_argmax", &soft_argmax_cuda);
  m.impl("soft_argmax_backward", &soft_argmax_backward_cuda);
  m.impl("find_peaks", &find_peaks_cuda);
}

}  // namespace kpfast
