// CPU kernels for Op 2, the fused weighted heatmap loss that renders its target on the fly.
//
// One map (b, k) per task of at::parallel_for. Within a map the target is rebuilt row by row
// from the separable Gaussian (H + W exponentials per instance, like render), so neither the
// target nor the pixel weights ever exist as (B, K, H, W) tensors: the forward reads pred once
// and writes two floats per map; the backward reads pred once and writes the gradient once.
// pred may have any strides; the gradient is contiguous, in pred's dtype.
#include <algorithm>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "cpu/ops.h"
#include "kpfast/loss.h"

namespace kpfast {
namespace {

// The target rule of one map, prepared once per map and evaluated row by row.
struct MapTarget {
  std::vector<GaussianWindow<float>> windows;
  std::vector<float> col_factor;  // exp(-dx^2 / 2 sigma^2) per instance, per column of its window
  std::vector<int> mu_x, mu_y;    // the positive pixel of each valid instance (may lie off the map)
  float map_weight = 0.0f;        // max over instances of the render rule's output weight

  MapTarget(int64_t N, int width) : windows(N), col_factor(N * width), mu_x(N), mu_y(N) {}

  void prepare(const float* keypoints, const float* weights, float s, int64_t b, int64_t k, int64_t N, int64_t K,
               int height, int width, Encoding encoding) {
    map_weight = 0.0f;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t idx = (b * N + n) * K + k;
      const float x = keypoints[2 * idx], y = keypoints[2 * idx + 1], w = weights[idx];
      auto& g = windows[n];
      g = gaussian_window<float>(x, y, w, s, height, width, encoding);
      if (!g.valid) continue;
      map_weight = std::max(map_weight, w);
      // Valid keypoints have finite coordinates whose window meets the map, so these fit in int.
      mu_x[n] = static_cast<int>(std::floor(x + 0.5f));
      mu_y[n] = static_cast<int>(std::floor(y + 0.5f));
      for (int col = g.x0; col <= g.x1; ++col) {
        const float dx = float(col) - g.cx;
        col_factor[n * width + col] = std::exp(-dx * dx * g.inv_two_sigma_sq);
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
      if (mu_y[n] == r && mu_x[n] >= 0 && mu_x[n] < width) positive[mu_x[n]] = 1;
      if (r < g.y0 || r > g.y1) continue;
      const float dy = float(r) - g.cy;
      const float row_factor = std::exp(-dy * dy * g.inv_two_sigma_sq);
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

template <LossKind KIND, typename pred_t>
void loss_forward_kernel(const pred_t* pred, const float* keypoints, const float* weights, const float* sigma,
                         float* map_losses, float* positives, const LossGeometry& G, Encoding encoding,
                         const LossParams& P) {
  const int64_t map_size = int64_t(G.height) * G.width;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(map_size, 1));
  at::parallel_for(0, G.B * G.K, grain, [&](int64_t begin, int64_t end) {
    MapTarget target(G.N, G.width);
    std::vector<float> t(G.width);
    std::vector<char> pos(G.width);
    for (int64_t map = begin; map < end; ++map) {
      const int64_t b = map / G.K, k = map % G.K;
      target.prepare(keypoints, weights, sigma[map], b, k, G.N, G.K, G.height, G.width, encoding);
      double total = 0.0;
      int64_t count = 0;
      if (target.map_weight > 0.0f) {  // an ignored map contributes exactly 0, whatever pred holds
        const pred_t* p_map = pred + b * G.stride_b + k * G.stride_k;
        for (int r = 0; r < G.height; ++r) {
          target.row(r, G.width, t.data(), pos.data());
          const pred_t* p_row = p_map + r * G.stride_h;
          float row_total = 0.0f;
          for (int c = 0; c < G.width; ++c) {
            const float x = static_cast<float>(p_row[c * G.stride_w]);
            row_total += pixel_weight(t[c], P) * pixel_loss<KIND, false>(x, t[c], pos[c] != 0, P);
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

template <LossKind KIND, typename pred_t>
void loss_backward_kernel(const float* upstream, const pred_t* pred, const float* keypoints, const float* weights,
                          const float* sigma, pred_t* grad, const LossGeometry& G, Encoding encoding,
                          const LossParams& P) {
  const int64_t map_size = int64_t(G.height) * G.width;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(map_size, 1));
  at::parallel_for(0, G.B * G.K, grain, [&](int64_t begin, int64_t end) {
    MapTarget target(G.N, G.width);
    std::vector<float> t(G.width);
    std::vector<char> pos(G.width);
    for (int64_t map = begin; map < end; ++map) {
      const int64_t b = map / G.K, k = map % G.K;
      pred_t* g_map = grad + map * map_size;
      target.prepare(keypoints, weights, sigma[map], b, k, G.N, G.K, G.height, G.width, encoding);
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
        for (int c = 0; c < G.width; ++c) {
          const float x = static_cast<float>(p_row[c * G.stride_w]);
          g_row[c] = static_cast<pred_t>(scale * pixel_weight(t[c], P) * pixel_loss<KIND, true>(x, t[c], pos[c] != 0, P));
        }
      }
    }
  });
}

LossGeometry geometry(const at::Tensor& pred, const at::Tensor& keypoints) {
  return LossGeometry{keypoints.size(0),  keypoints.size(1),  keypoints.size(2), static_cast<int>(pred.size(2)),
                      static_cast<int>(pred.size(3)), pred.stride(0), pred.stride(1), pred.stride(2), pred.stride(3)};
}

template <typename Fn>
void dispatch_kind(LossKind kind, Fn&& fn) {
  switch (kind) {
    case LossKind::MSE: fn(std::integral_constant<LossKind, LossKind::MSE>{}); break;
    case LossKind::FOCAL: fn(std::integral_constant<LossKind, LossKind::FOCAL>{}); break;
    case LossKind::CORNERNET: fn(std::integral_constant<LossKind, LossKind::CORNERNET>{}); break;
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> heatmap_loss_cpu(const at::Tensor& pred, const at::Tensor& keypoints,
                                                    const at::Tensor& weights, const at::Tensor& sigma,
                                                    c10::string_view encoding, c10::string_view kind, double alpha,
                                                    double gamma, double beta, double keypoint_weight,
                                                    double background_weight, double threshold, double l1_weight) {
  check_loss_inputs(pred, keypoints, weights, sigma);
  const Encoding enc = encoding_from_string(std::string(encoding));
  const LossKind loss_kind = loss_kind_from_string(std::string(kind));
  const LossParams P = make_loss_params(alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight);
  const auto G = geometry(pred, keypoints);
  auto map_losses = at::zeros({G.B, G.K}, keypoints.options());
  auto positives = at::zeros({G.B, G.K}, keypoints.options());
  if (G.B * G.K == 0 || pred.numel() == 0) return {map_losses, positives};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "heatmap_loss_cpu", [&] {
    dispatch_kind(loss_kind, [&](auto kind_tag) {
      loss_forward_kernel<decltype(kind_tag)::value, scalar_t>(
          pred.data_ptr<scalar_t>(), keypoints.data_ptr<float>(), weights.data_ptr<float>(), sigma.data_ptr<float>(),
          map_losses.data_ptr<float>(), positives.data_ptr<float>(), G, enc, P);
    });
  });
  return {map_losses, positives};
}

at::Tensor heatmap_loss_backward_cpu(const at::Tensor& grad_map_losses, const at::Tensor& pred,
                                     const at::Tensor& keypoints, const at::Tensor& weights, const at::Tensor& sigma,
                                     c10::string_view encoding, c10::string_view kind, double alpha, double gamma,
                                     double beta, double keypoint_weight, double background_weight, double threshold,
                                     double l1_weight) {
  check_loss_inputs(pred, keypoints, weights, sigma);
  const Encoding enc = encoding_from_string(std::string(encoding));
  const LossKind loss_kind = loss_kind_from_string(std::string(kind));
  const LossParams P = make_loss_params(alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight);
  const auto G = geometry(pred, keypoints);
  TORCH_CHECK(grad_map_losses.dim() == 2 && grad_map_losses.size(0) == G.B && grad_map_losses.size(1) == G.K,
              "grad_map_losses must have shape (", G.B, ", ", G.K, "), got ", grad_map_losses.sizes());
  // (B, K) floats: the upstream gradient is often an expanded scalar (stride 0).
  const auto upstream = grad_map_losses.to(at::kFloat).contiguous();
  auto grad = at::empty(pred.sizes(), pred.options().memory_format(at::MemoryFormat::Contiguous));
  if (grad.numel() == 0) return grad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pred.scalar_type(), "heatmap_loss_backward_cpu", [&] {
    dispatch_kind(loss_kind, [&](auto kind_tag) {
      loss_backward_kernel<decltype(kind_tag)::value, scalar_t>(
          upstream.data_ptr<float>(), pred.data_ptr<scalar_t>(), keypoints.data_ptr<float>(),
          weights.data_ptr<float>(), sigma.data_ptr<float>(), grad.data_ptr<scalar_t>(), G, enc, P);
    });
  });
  return grad;
}

}  // namespace kpfast
