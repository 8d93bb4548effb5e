// The torch side shared by every kernel file: the LibTorch stable ABI headers, argument parsing
// and the input checks of direct torch.ops.kpfast.* calls (the Python layer validates user input
// with readable messages first). The math headers (gaussian.h, loss.h, decode.h) stay free of
// torch so that they compile for host and device alike.
//
// Only the stable ABI is used (torch/csrc/stable, torch/headeronly; TORCH_TARGET_VERSION is set
// by setup.py), so one binary loads in every torch >= the target version.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/Dispatch.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include "kpfast/decode.h"
#include "kpfast/gaussian.h"
#include "kpfast/loss.h"

namespace kpfast {

using Tensor = torch::stable::Tensor;
using ScalarType = torch::headeronly::ScalarType;

// Dispatch over the heatmap dtypes the Python API lets reach a kernel (float64 only where an op
// computes in float64: render with float64 keypoints, soft-argmax of float64 maps).
#define KPF_DISPATCH_HEATMAP_TYPES(TYPE, NAME, ...)                         \
  THO_DISPATCH_SWITCH(TYPE, NAME,                                           \
                      THO_DISPATCH_CASE(ScalarType::Float, __VA_ARGS__)     \
                          THO_DISPATCH_CASE(ScalarType::Half, __VA_ARGS__)  \
                              THO_DISPATCH_CASE(ScalarType::BFloat16, __VA_ARGS__))
#define KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(TYPE, NAME, ...)                  \
  THO_DISPATCH_SWITCH(TYPE, NAME,                                               \
                      THO_DISPATCH_CASE(ScalarType::Float, __VA_ARGS__)         \
                          THO_DISPATCH_CASE(ScalarType::Half, __VA_ARGS__)      \
                              THO_DISPATCH_CASE(ScalarType::BFloat16, __VA_ARGS__) \
                                  THO_DISPATCH_CASE(ScalarType::Double, __VA_ARGS__))
#define KPF_DISPATCH_FLOAT_AND_DOUBLE(TYPE, NAME, ...) \
  THO_DISPATCH_SWITCH(TYPE, NAME,                      \
                      THO_DISPATCH_CASE(ScalarType::Float, __VA_ARGS__) THO_DISPATCH_CASE(ScalarType::Double, __VA_ARGS__))

inline std::string shape_of(const Tensor& t) {
  std::ostringstream out;
  out << "(";
  for (int64_t d = 0; d < t.dim(); ++d) out << (d ? ", " : "") << t.size(d);
  out << ")";
  return out.str();
}

inline bool has_shape(const Tensor& t, const std::vector<int64_t>& shape) {
  if (t.dim() != static_cast<int64_t>(shape.size())) return false;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (t.size(static_cast<int64_t>(d)) != shape[d]) return false;
  }
  return true;
}

inline const char* dtype_name(ScalarType t) { return torch::headeronly::toString(t); }

// An uninitialised contiguous tensor on `like`'s device (every kernel writes all of its output).
inline Tensor new_empty(const Tensor& like, const std::vector<int64_t>& shape, ScalarType dtype) {
  return torch::stable::new_empty(like, torch::headeronly::IntHeaderOnlyArrayRef(shape.data(), shape.size()), dtype);
}

inline Tensor to_contiguous(const Tensor& t, ScalarType dtype) {
  return torch::stable::contiguous(t.scalar_type() == dtype ? t : torch::stable::to(t, dtype));
}

// t itself, with its strides, when it already has dtype (an expanded upstream gradient is not
// copied); else cast. For the kernels that read their input with its strides.
inline Tensor as_dtype(const Tensor& t, ScalarType dtype) {
  return t.scalar_type() == dtype ? t : torch::stable::to(t, dtype);
}

inline void check_same_device(const Tensor& a, const char* a_name, const Tensor& b, const char* b_name) {
  STD_TORCH_CHECK(a.device() == b.device(), a_name, " and ", b_name, " must be on one device, got ",
                  a.device().type() == b.device().type() ? "different indices" : "different device types");
}

inline Encoding encoding_from_string(const std::string& name) {
  if (name == "msra") return Encoding::MSRA;
  if (name == "udp") return Encoding::UDP;
  if (name == "dark") return Encoding::DARK;
  STD_TORCH_CHECK(false, "encoding must be one of 'msra', 'udp', 'dark', got '", name, "'");
}

inline LossKind loss_kind_from_string(const std::string& name) {
  if (name == "mse") return LossKind::MSE;
  if (name == "focal") return LossKind::FOCAL;
  if (name == "cornernet") return LossKind::CORNERNET;
  STD_TORCH_CHECK(false, "kind must be one of 'mse', 'focal', 'cornernet', got '", name, "'");
}

inline DecodeMethod decode_method_from_string(const std::string& name) {
  if (name == "argmax") return DecodeMethod::ARGMAX;
  if (name == "quarter") return DecodeMethod::QUARTER;
  if (name == "dark") return DecodeMethod::DARK;
  if (name == "udp") return DecodeMethod::UDP;
  if (name == "local_mean") return DecodeMethod::LOCAL_MEAN;
  STD_TORCH_CHECK(false, "method must be one of 'argmax', 'quarter', 'dark', 'udp', 'local_mean', got '", name,
                  "'");
}

// The shapes the Python layer normalises every render call to: keypoints (B, N, K, 2),
// weights (B, N, K), sigma (B, K), all contiguous and of one floating dtype.
inline void check_render_inputs(const Tensor& keypoints, const Tensor& weights, const Tensor& sigma) {
  STD_TORCH_CHECK(keypoints.dim() == 4 && keypoints.size(3) == 2, "keypoints must have shape (B, N, K, 2), got ",
                  shape_of(keypoints));
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  STD_TORCH_CHECK(has_shape(weights, {B, N, K}), "weights must have shape (", B, ", ", N, ", ", K, "), got ",
                  shape_of(weights));
  STD_TORCH_CHECK(has_shape(sigma, {B, K}), "sigma must have shape (", B, ", ", K, "), got ", shape_of(sigma));
  const ScalarType t = keypoints.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Float || t == ScalarType::Double, "keypoints must be float32 or float64, got ",
                  dtype_name(t));
  STD_TORCH_CHECK(weights.scalar_type() == t && sigma.scalar_type() == t,
                  "keypoints, weights and sigma must share one dtype, got ", dtype_name(t), ", ",
                  dtype_name(weights.scalar_type()), ", ", dtype_name(sigma.scalar_type()));
  STD_TORCH_CHECK(keypoints.is_contiguous() && weights.is_contiguous() && sigma.is_contiguous(),
                  "keypoints, weights and sigma must be contiguous");
  check_same_device(keypoints, "keypoints", weights, "weights");
  check_same_device(keypoints, "keypoints", sigma, "sigma");
}

using OptionalTensor = std::optional<Tensor>;

// The render and loss inputs as the Python layer passes them (one launch per op call: nothing is
// materialised for absent or broadcast arguments): keypoints (B, N, K, 2) contiguous, float32 or
// float64; weights (B, N, K) contiguous of keypoints' dtype, or absent (every weight 1); sigma a
// (B, K) tensor of keypoints' dtype with any strides (an expanded (K,) sigma), or absent, and then
// sigma_value is every map's sigma.
inline void check_keypoint_inputs(const Tensor& keypoints, const OptionalTensor& weights, const OptionalTensor& sigma,
                                  double sigma_value) {
  STD_TORCH_CHECK(keypoints.dim() == 4 && keypoints.size(3) == 2, "keypoints must have shape (B, N, K, 2), got ",
                  shape_of(keypoints));
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  const ScalarType t = keypoints.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Float || t == ScalarType::Double, "keypoints must be float32 or float64, got ",
                  dtype_name(t));
  STD_TORCH_CHECK(keypoints.is_contiguous(), "keypoints must be contiguous");
  if (weights.has_value()) {
    STD_TORCH_CHECK(has_shape(*weights, {B, N, K}), "weights must have shape (", B, ", ", N, ", ", K, "), got ",
                    shape_of(*weights));
    STD_TORCH_CHECK(weights->scalar_type() == t, "weights must have keypoints' dtype ", dtype_name(t), ", got ",
                    dtype_name(weights->scalar_type()));
    STD_TORCH_CHECK(weights->is_contiguous(), "weights must be contiguous");
    check_same_device(keypoints, "keypoints", *weights, "weights");
  }
  if (sigma.has_value()) {
    STD_TORCH_CHECK(has_shape(*sigma, {B, K}), "sigma must have shape (", B, ", ", K, "), got ", shape_of(*sigma));
    STD_TORCH_CHECK(sigma->scalar_type() == t, "sigma must have keypoints' dtype ", dtype_name(t), ", got ",
                    dtype_name(sigma->scalar_type()));
    check_same_device(keypoints, "keypoints", *sigma, "sigma");
  } else {
    STD_TORCH_CHECK(std::isfinite(sigma_value) && sigma_value > 0, "sigma_value must be finite and > 0, got ",
                    sigma_value);
  }
}

template <typename T>
MapSigma<T> map_sigma(const OptionalTensor& sigma, double sigma_value) {
  if (!sigma.has_value()) return MapSigma<T>{nullptr, 0, 0, static_cast<T>(sigma_value)};
  return MapSigma<T>{sigma->const_data_ptr<T>(), sigma->stride(0), sigma->stride(1), T(0)};
}

template <typename T>
const T* weights_data(const OptionalTensor& weights) {
  return weights.has_value() ? weights->const_data_ptr<T>() : nullptr;
}

// A 4-D tensor as StridedMaps (gaussian.h): its data and strides, no copy.
template <typename T>
StridedMaps<T> strided_maps(const Tensor& maps) {
  return StridedMaps<T>{maps.const_data_ptr<T>(), maps.stride(0), maps.stride(1), maps.stride(2), maps.stride(3)};
}

inline void check_size(int64_t height, int64_t width) {
  STD_TORCH_CHECK(height >= 0 && width >= 0, "height and width must be >= 0, got ", height, "x", width);
}

// The render forward's whole argument check, shared by the CPU and CUDA entry points.
inline void check_render_forward(const Tensor& keypoints, const OptionalTensor& weights, const OptionalTensor& sigma,
                                 double sigma_value, int64_t height, int64_t width, ScalarType dtype) {
  check_keypoint_inputs(keypoints, weights, sigma, sigma_value);
  check_size(height, width);
  const ScalarType compute = keypoints.scalar_type();
  STD_TORCH_CHECK(dtype == ScalarType::Float || dtype == ScalarType::Half || dtype == ScalarType::BFloat16 ||
                      (dtype == ScalarType::Double && compute == ScalarType::Double),
                  "dtype must be float32, float16 or bfloat16 (float64 with float64 keypoints), got ",
                  dtype_name(dtype));
}

// The loss inputs, in the argument convention of check_keypoint_inputs (weights and sigma
// optional), float32 keypoints, and pred (B, K, H, W) float32/float16/bfloat16 with any strides.
inline void check_loss_inputs(const Tensor& pred, const Tensor& keypoints, const OptionalTensor& weights,
                              const OptionalTensor& sigma, double sigma_value) {
  check_keypoint_inputs(keypoints, weights, sigma, sigma_value);
  STD_TORCH_CHECK(keypoints.scalar_type() == ScalarType::Float, "heatmap_loss: keypoints must be float32, got ",
                  dtype_name(keypoints.scalar_type()));
  STD_TORCH_CHECK(pred.dim() == 4 && pred.size(0) == keypoints.size(0) && pred.size(1) == keypoints.size(2),
                  "pred must have shape (", keypoints.size(0), ", ", keypoints.size(2), ", H, W), got ",
                  shape_of(pred));
  const ScalarType t = pred.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16,
                  "pred must be float32, float16 or bfloat16, got ", dtype_name(t));
  check_same_device(pred, "pred", keypoints, "keypoints");
}

// What every loss entry point (CPU and CUDA, forward and backward) starts with: the inputs
// checked, the strings parsed, the scalars packed for the kernels.
struct LossCall {
  Encoding encoding;
  LossKind kind;
  LossParams params;
};

inline LossCall loss_call(const Tensor& pred, const Tensor& keypoints, const OptionalTensor& weights,
                          const OptionalTensor& sigma, double sigma_value, const std::string& encoding,
                          const std::string& kind, double alpha, double gamma, double beta, double keypoint_weight,
                          double background_weight, double threshold, double l1_weight) {
  check_loss_inputs(pred, keypoints, weights, sigma, sigma_value);
  return LossCall{encoding_from_string(encoding), loss_kind_from_string(kind),
                  make_loss_params(alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight)};
}

// The backward's upstream gradient of the per-map sums: (B, K) on pred's device, any strides.
inline void check_loss_upstream(const Tensor& grad_map_losses, const Tensor& pred) {
  STD_TORCH_CHECK(has_shape(grad_map_losses, {pred.size(0), pred.size(1)}), "grad_map_losses must have shape (",
                  pred.size(0), ", ", pred.size(1), "), got ", shape_of(grad_map_losses));
  check_same_device(grad_map_losses, "grad_map_losses", pred, "pred");
}

inline void check_heatmaps(const Tensor& heatmaps, bool allow_double) {
  STD_TORCH_CHECK(heatmaps.dim() == 4, "heatmaps must have shape (B, K, H, W), got ", shape_of(heatmaps));
  STD_TORCH_CHECK(heatmaps.size(2) >= 1 && heatmaps.size(3) >= 1, "heatmaps must have H >= 1 and W >= 1, got ",
                  shape_of(heatmaps));
  const ScalarType t = heatmaps.scalar_type();
  STD_TORCH_CHECK(t == ScalarType::Float || t == ScalarType::Half || t == ScalarType::BFloat16 ||
                      (allow_double && t == ScalarType::Double),
                  "heatmaps must be float32, float16 or bfloat16", allow_double ? " (or float64)" : "", ", got ",
                  dtype_name(t));
  STD_TORCH_CHECK(heatmaps.is_contiguous(), "heatmaps must be contiguous");
}

inline void check_decode_arguments(int64_t blur_kernel, int64_t window) {
  STD_TORCH_CHECK(blur_kernel >= 1 && blur_kernel <= kMaxBlurKernel && blur_kernel % 2 == 1,
                  "blur_kernel must be odd and in [1, ", kMaxBlurKernel, "], got ", blur_kernel);
  STD_TORCH_CHECK(window >= 1 && window % 2 == 1, "window must be odd and >= 1, got ", window);
}

inline void check_peak_arguments(int64_t min_distance, int64_t max_peaks) {
  STD_TORCH_CHECK(min_distance >= 0, "min_distance must be >= 0, got ", min_distance);
  STD_TORCH_CHECK(max_peaks >= 1, "max_peaks must be >= 1, got ", max_peaks);
}

inline void check_soft_argmax_backward_inputs(const Tensor& grad_coords, const Tensor& heatmaps,
                                              const Tensor& coords, const Tensor& log_normaliser) {
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  STD_TORCH_CHECK(has_shape(grad_coords, {B, K, 2}) && has_shape(coords, {B, K, 2}),
                  "grad_coords and coords must have shape (", B, ", ", K, ", 2), got ", shape_of(grad_coords),
                  " and ", shape_of(coords));
  STD_TORCH_CHECK(has_shape(log_normaliser, {B, K}), "log_normaliser must have shape (", B, ", ", K, "), got ",
                  shape_of(log_normaliser));
  check_same_device(grad_coords, "grad_coords", heatmaps, "heatmaps");
  check_same_device(coords, "coords", heatmaps, "heatmaps");
  check_same_device(log_normaliser, "log_normaliser", heatmaps, "heatmaps");
}

}  // namespace kpfast
