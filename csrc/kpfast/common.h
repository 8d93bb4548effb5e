// Helpers shared by the CPU and CUDA operator implementations.
#pragma once

#include <string>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include "kpfast/gaussian.h"

namespace kpfast {

inline Encoding encoding_from_string(const std::string& name) {
  if (name == "msra") return Encoding::MSRA;
  if (name == "udp") return Encoding::UDP;
  if (name == "dark") return Encoding::DARK;
  TORCH_CHECK(false, "encoding must be one of 'msra', 'udp', 'dark', got '", name, "'");
}

// The shapes the Python layer normalises every render call to: keypoints (B, N, K, 2),
// weights (B, N, K), sigma (B, K), all contiguous and of one floating dtype.
inline void check_render_inputs(const at::Tensor& keypoints, const at::Tensor& weights,
                                const at::Tensor& sigma) {
  TORCH_CHECK(keypoints.dim() == 4 && keypoints.size(3) == 2,
              "keypoints must have shape (B, N, K, 2), got ", keypoints.sizes());
  const auto B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  TORCH_CHECK(weights.dim() == 3 && weights.size(0) == B && weights.size(1) == N && weights.size(2) == K,
              "weights must have shape (", B, ", ", N, ", ", K, "), got ", weights.sizes());
  TORCH_CHECK(sigma.dim() == 2 && sigma.size(0) == B && sigma.size(1) == K,
              "sigma must have shape (", B, ", ", K, "), got ", sigma.sizes());
  TORCH_CHECK(keypoints.scalar_type() == at::kFloat || keypoints.scalar_type() == at::kDouble,
              "keypoints must be float32 or float64, got ", keypoints.scalar_type());
  TORCH_CHECK(weights.scalar_type() == keypoints.scalar_type() && sigma.scalar_type() == keypoints.scalar_type(),
              "keypoints, weights and sigma must share one dtype, got ", keypoints.scalar_type(), ", ",
              weights.scalar_type(), ", ", sigma.scalar_type());
  TORCH_CHECK(keypoints.is_contiguous() && weights.is_contiguous() && sigma.is_contiguous(),
              "keypoints, weights and sigma must be contiguous");
  TORCH_CHECK(keypoints.device() == weights.device() && keypoints.device() == sigma.device(),
              "keypoints, weights and sigma must be on one device");
}

}  // namespace kpfast
