// CPU kernels for Op 2, the fused weighted heatmap loss that renders its target on the fly.
//
// One map (b, k) per task of torch::stable::parallel_for. Within a map the target is rebuilt row by row
// from the separable Gaussian (H + W exponentials per instance, the separable_factor rule of
// kpfast/gaussian.h that the CUDA kernel tabulates too), so neither the
// target nor the pixel weights ever exist as (B, K, H, W) tensors: the forward reads pred once
// and writes two floats per map; the backward reads pred once and writes the gradient once.
// pred may have any strides; the gradient is contiguous, in pred's dtype.
//
// The pixel formulas run over one row at a time on float buffers with branch-free polynomial
// exp/log1p (VectorMath, cpu/vector_math.h), which GCC vectorises at -O3. The exponent policy of
// kpfast/loss.h (dispatch_loss) compiles the default exponents (focal gamma 2, cornernet alpha 2 /
// beta 4) as products; other exponents outside the small integers the fast pow covers fall back
// to libm (PreciseMath), one pixel at a time.
// weights may be absent (every weight 1) and sigma one value or a strided (B, K) view (MapSigma).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/vector_math.h"
#include "kpfast/checks.h"

namespace kpfast {
namespace {

bool small_exponent(float g) { return g == 0.0f || g == 1.0f || g == 2.0f || g == 3.0f || g == 4.0f; }

// Whether every exponent the formulas raise to is one VectorMath::pow covers.
bool uses_small_exponents(LossKind kind, const LossParams& P) {
  if (kind == LossKind::FOCAL) return small_exponent(P.gamma) && (P.gamma == 0.0f || small_exponent(P.gamma - 1.0f));
  if (kind == LossKind::CORNERNET) return small_exponent(P.alpha) && small_exponent(P.beta);
  return true;
}

// values[c] = w(t) * (loss or gradient) of each pixel of a row: the vectorised inner loop.
template <LossKind KIND, bool GRADIENT, typename Math, bool FIXED>
KPF_CPU_CLONES void row_values(const float* __restrict__ x, const float* __restrict__ t,
                               const char* __restrict__ positive, float* __restrict__ values, int width,
                               const LossParams& P) {
  for (int c = 0; c < width; ++c) {
    values[c] = pixel_weight<Math>(t[c], P) * pixel_loss<KIND, GRADIENT, Math, FIXED>(x[c], t[c], positive[c] != 0, P);
  }
}

// The target rule of one map, prepared once per map and evaluated row by row.
struct MapTarget {
  std::vector<GaussianWindow<float>> windows;
  std::vector<float> col_factor;  // exp(-dx^2 / 2 sigma^2) per instance, per column of its window
  std::vector<int> mu_x, mu_y;    // the positive pixel of each valid instance, (-1, -1) when off the map
  float map_weight = 0.0f;        // max over instances of the render rule's output weight

  MapTarget(int64_t N, int width) : windows(N), col_factor(N * width), mu_x(N), mu_y(N) {}

  void prepare(const float* keypoints, const float* weights, float s, int64_t b, int64_t k, int64_t N, int64_t K,
               int height, int width, Encoding encoding) {
    map_weight = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t idx = (b * N + n) * K + k;
      const float x = keypoints[2 * idx], y = keypoints[2 * idx + 1], w = weight_at(weights, idx);
      auto& g = windows[n];
      g = gaussian_window<float>(x, y, w, s, height, width, encoding);
      if (!g.valid) continue;
      map_weight = std::max(map_weight, w);
      positive_pixel(x, y, g.valid, height, width, &mu_x[n], &mu_y[n]);
      for (int col = g.x0; col <= g.x1; ++col) {
        col_factor[n * width + col] = separable_factor(col, g.cx, g.x0, g.x1, g.inv_two_sigma_sq);
      }
    }
  }

  // Target values of row r into `target`, positive flags into `positive`.
  void row(int r, int width, float* target, char* positive) const {
    std::fill(target, target + width, 0.0f);
    std::fill(positive, positive + width, char(0));
    const int64_t N = static_cast<int64_t>(windows.size());
    for (int64_t n = 0; n < N; ++n) {
      const auto& g = windows[n];
      if (!g.valid) continue;
      if (mu_y[n] == r) positive[mu_x[n]] = 1;  // (-1, -1) when off the map
      if (r < g.y0 || r > g.y1) continue;
      const float row_factor = separable_factor(r, g.cy, g.y0, g.y1, g.inv_two_sigma_sq);
      const float* cf = col_factor.data() + n * width;
      for (int col = g.x0; col <= g.x1; ++col) target[col] = std::max(target[col], row_factor * cf[col]);
    }
  }
};

struct LossGeometry {
  int64_t B, N, K;
  int height, width;
  int64_t stride_b, stride_k, stride_h, stride_w;  // of pred, in elements
};

template <LossKind KIND, typename Math, bool FIXED, typename pred_t>
void loss_forward_kernel(const pred_t* pred, const float* keypoints, const float* weights, MapSigma<float> sigma,
                         float* map_losses, float* positives, const LossGeometry& G, Encoding encoding,
                         const LossParams& P) {
  const int64_t map_size = int64_t(G.height) * G.width;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(map_size, 1));
  torch::stable::parallel_for(0, G.B * G.K, grain, [&](int64_t begin, int64_t end) {
    MapTarget target(G.N, G.width);
    std::vector<float> t(G.width), x(G.width), values(G.width);
    std::vector<char> pos(G.width);
    for (int64_t map = begin; map < end; ++map) {
      const int64_t b = map / G.K, k = map % G.K;
      target.prepare(keypoints, weights, sigma.at(b, k), b, k, G.N, G.K, G.height, G.width, encoding);
      double total = 0.0;
      int64_t count = 0;
      if (target.map_weight > 0.0f) {  // an ignored map contributes exactly 0, whatever pred holds
        const pred_t* p_map = pred + b * G.stride_b + k * G.stride_k;
        for (int r = 0; r < G.height; ++r) {
          target.row(r, G.width, t.data(), pos.data());
          const pred_t* p_row = p_map + r * G.stride_h;
          for (int c = 0; c < G.width; ++c) x[c] = static_cast<float>(p_row[c * G.stride_w]);
          row_values<KIND, false, Math, FIXED>(x.data(), t.data(), pos.data(), values.data(), G.width, P);
          float row_total = 0.0f;
          for (int c = 0; c < G.width; ++c) {
            row_total += values[c];
            count += pos[c];
          }
          total += row_total;
        }
      }
      map_losses[map] = static_cast<float>(total * target.map_weight);
      positives[map] = static_cast<float>(count);
    }
  });
}

template <LossKind KIND, typename Math, bool FIXED, typename pred_t>
void loss_backward_kernel(const float* upstream, const pred_t* pred, const float* keypoints, const float* weights,
                          MapSigma<float> sigma, pred_t* grad, const LossGeometry& G, Encoding encoding,
                          const LossParams& P) {
  const int64_t map_size = int64_t(G.height) * G.width;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(map_size, 1));
  torch::stable::parallel_for(0, G.B * G.K, grain, [&](int64_t begin, int64_t end) {
    MapTarget target(G.N, G.width);
    std::vector<float> t(G.width), x(G.width), values(G.width);
    std::vector<char> pos(G.width);
    for (int64_t map = begin; map < end; ++map) {
      const int64_t b = map / G.K, k = map % G.K;
      pred_t* g_map = grad + map * map_size;
      target.prepare(keypoints, weights, sigma.at(b, k), b, k, G.N, G.K, G.height, G.width, encoding);
      const float scale = upstream[map] * target.map_weight;
      if (target.map_weight == 0.0f || upstream[map] == 0.0f) {  // ignored map, or a map OHKM dropped
        std::fill(g_map, g_map + map_size, pred_t(0));
        continue;
      }
      const pred_t* p_map = pred + b * G.stride_b + k * G.stride_k;
      for (int r = 0; r < G.height; ++r) {
        target.row(r, G.width, t.data(), pos.data());
        const pred_t* p_row = p_map + r * G.stride_h;
        pred_t* g_row = g_map + int64_t(r) * G.width;
        for (int c = 0; c < G.width; ++c) x[c] = static_cast<float>(p_row[c * G.stride_w]);
        row_values<KIND, true, Math, FIXED>(x.data(), t.data(), pos.data(), values.data(), G.width, P);
        for (int c = 0; c < G.width; ++c) g_row[c] = static_cast<pred_t>(scale * values[c]);
      }
    }
  });
}

LossGeometry geometry(const Tensor& pred, const Tensor& keypoints) {
  return LossGeometry{keypoints.size(0),  keypoints.size(1),  keypoints.size(2), static_cast<int>(pred.size(2)),
                      static_cast<int>(pred.size(3)), pred.stride(0), pred.stride(1), pred.stride(2), pred.stride(3)};
}

// Calls fn(kind tag, fixed tag, math tag): the exponent policy of kpfast/loss.h (dispatch_loss) and
// the math policy, as compile-time types. Fixed exponents and small integer ones run VectorMath.
template <typename Fn>
void dispatch_kind(LossKind kind, const LossParams& P, Fn&& fn) {
  dispatch_loss(kind, P, [&](auto kind_tag, auto fixed_tag) {
    if (decltype(fixed_tag)::value || uses_small_exponents(kind, P)) {
      fn(kind_tag, fixed_tag, VectorMath{});
    } else {
      fn(kind_tag, fixed_tag, PreciseMath{});
    }
  });
}

}  // namespace

std::tuple<Tensor, Tensor> heatmap_loss_cpu(Tensor pred, Tensor keypoints, OptionalTensor weights,
                                            OptionalTensor sigma, double sigma_value, std::string encoding,
                                            std::string kind, double alpha, double gamma, double beta,
                                            double keypoint_weight, double background_weight, double threshold,
                                            double l1_weight) {
  const LossCall call = loss_call(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                                  keypoint_weight, background_weight, threshold, l1_weight);
  const Encoding enc = call.encoding;
  const LossKind loss_kind = call.kind;
  const LossParams& P = call.params;
  const auto G = geometry(pred, keypoints);
  // Every map's two values are written by the kernel, so no zero fill (but an empty map has
  // no pixel to visit: then the sums are zeros).
  Tensor map_losses = new_empty(keypoints, {G.B, G.K}, ScalarType::Float);
  Tensor positives = new_empty(keypoints, {G.B, G.K}, ScalarType::Float);
  if (G.B * G.K == 0) return {map_losses, positives};
  KPF_DISPATCH_HEATMAP_TYPES(pred.scalar_type(), "heatmap_loss_cpu", [&] {
    dispatch_kind(loss_kind, P, [&](auto kind_tag, auto fixed_tag, auto math) {
      loss_forward_kernel<decltype(kind_tag)::value, decltype(math), decltype(fixed_tag)::value, scalar_t>(
          pred.const_data_ptr<scalar_t>(), keypoints.const_data_ptr<float>(), weights_data<float>(weights),
          map_sigma<float>(sigma, sigma_value), map_losses.mutable_data_ptr<float>(),
          positives.mutable_data_ptr<float>(), G, enc, P);
    });
  });
  return {map_losses, positives};
}

Tensor heatmap_loss_backward_cpu(Tensor grad_map_losses, Tensor pred, Tensor keypoints, OptionalTensor weights,
                                 OptionalTensor sigma, double sigma_value, std::string encoding, std::string kind,
                                 double alpha, double gamma, double beta, double keypoint_weight,
                                 double background_weight, double threshold, double l1_weight) {
  const LossCall call = loss_call(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                                  keypoint_weight, background_weight, threshold, l1_weight);
  const Encoding enc = call.encoding;
  const LossKind loss_kind = call.kind;
  const LossParams& P = call.params;
  const auto G = geometry(pred, keypoints);
  check_loss_upstream(grad_map_losses, pred);
  // (B, K) floats: the upstream gradient is often an expanded scalar (stride 0).
  const Tensor upstream = to_contiguous(grad_map_losses, ScalarType::Float);
  Tensor grad = new_empty(pred, {pred.size(0), pred.size(1), pred.size(2), pred.size(3)}, pred.scalar_type());
  if (grad.numel() == 0) return grad;
  KPF_DISPATCH_HEATMAP_TYPES(pred.scalar_type(), "heatmap_loss_backward_cpu", [&] {
    dispatch_kind(loss_kind, P, [&](auto kind_tag, auto fixed_tag, auto math) {
      loss_backward_kernel<decltype(kind_tag)::value, decltype(math), decltype(fixed_tag)::value, scalar_t>(
          upstream.const_data_ptr<float>(), pred.const_data_ptr<scalar_t>(), keypoints.const_data_ptr<float>(),
          weights_data<float>(weights), map_sigma<float>(sigma, sigma_value), grad.mutable_data_ptr<scalar_t>(), G,
          enc, P);
    });
  });
  return grad;
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CPU, m) {
  m.impl("heatmap_loss", TORCH_BOX(&heatmap_loss_cpu));
  m.impl("_heatmap_loss_backward", TORCH_BOX(&heatmap_loss_backward_cpu));
}

}  // namespace kpfast
