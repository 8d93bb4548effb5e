// The CPU dispatch table: every operator of csrc/ops.cpp with its CPU kernel.
#include <torch/library.h>

#include "cpu/ops.h"

namespace kpfast {

TORCH_LIBRARY_IMPL(kpfast, CPU, m) {
  m.impl("render_heatmaps", &render_heatmaps_cpu);
  m.impl("render_heatmaps_backward", &render_heatmaps_backward_cpu);

  // Op 2: fused heatmap loss.
  m.impl("heatmap_loss", &heatmap_loss_cpu);
  m.impl("heatmap_loss_backward", &heatmap_loss_backward_cpu);
  // Op 3: decoding.
  m.impl("decode_heatmaps", &decode_heatmaps_cpu);
  m.impl("soft_argmax", &soft_argmax_cpu);
  m.impl("soft_argmax_backward", &soft_argmax_backward_cpu);
  m.impl("find_peaks", &find_peaks_cpu);
}

}  // namespace kpfast
