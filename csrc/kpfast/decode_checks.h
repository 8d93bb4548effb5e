// Input checks of the decoding operators, shared by the CPU and CUDA implementations. The
// Python layer (kpfast/ops/decode.py) validates user input with readable messages; these
// checks guard direct calls of torch.ops.kpfast.*.
#pragma once

#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "kpfast/decode.h"

namespace kpfast {

inline DecodeMethod decode_method_from_string(const std::string& name) {
  if (name == "argmax") return DecodeMethod::ARGMAX;
  if (name == "quarter") return DecodeMethod::QUARTER;
  if (name == "dark") return DecodeMethod::DARK;
  if (name == "udp") return DecodeMethod::UDP;
  if (name == "local_mean") return DecodeMethod::LOCAL_MEAN;
  TORCH_CHECK(false, "method must be one of 'argmax', 'quarter', 'dark', 'udp', 'local_mean', got '", name, "'");
}

inline void check_heatmaps(const at::Tensor& heatmaps, bool allow_double) {
  TORCH_CHECK(heatmaps.dim() == 4, "heatmaps must have shape (B, K, H, W), got ", heatmaps.sizes());
  TORCH_CHECK(heatmaps.size(2) >= 1 && heatmaps.size(3) >= 1, "heatmaps must have H >= 1 and W >= 1, got ",
              heatmaps.sizes());
  const auto t = heatmaps.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || (allow_double && t == at::kDouble),
              "heatmaps must be float32, float16 or bfloat16", allow_double ? " (or float64)" : "", ", got ", t);
  TORCH_CHECK(heatmaps.is_contiguous(), "heatmaps must be contiguous");
}

inline void check_decode_arguments(int64_t blur_kernel, int64_t window) {
  TORCH_CHECK(blur_kernel >= 1 && blur_kernel <= kMaxBlurKernel && blur_kernel % 2 == 1,
              "blur_kernel must be odd and in [1, ", kMaxBlurKernel, "], got ", blur_kernel);
  TORCH_CHECK(window >= 1 && window % 2 == 1, "window must be odd and >= 1, got ", window);
}

inline void check_peak_arguments(int64_t min_distance, int64_t max_peaks) {
  TORCH_CHECK(min_distance >= 0, "min_distance must be >= 0, got ", min_distance);
  TORCH_CHECK(max_peaks >= 1, "max_peaks must be >= 1, got ", max_peaks);
}

}  // namespace kpfast
