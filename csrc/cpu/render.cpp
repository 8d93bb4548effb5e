// CPU kernels for Op 1, Gaussian heatmap rendering. One map (b, k) per task of
// torch::stable::parallel_for; within a map, the Gaussian is separable, so each instance costs H + W
// exponentials and the inner loop over columns is a vectorisable multiply-max. A pixel is
// gaussian_row_factor * gaussian_col_factor (kpfast/gaussian.h), the rule of the CUDA kernel too.
// Absent weights (null pointer: every weight 1) and a float sigma (MapSigma without data) are
// read as such, never materialised.
#include <algorithm>
#include <tuple>
#include <vector>

#include "kpfast/checks.h"

namespace kpfast {
namespace {

template <typename scalar_t, typename out_t>
void render_forward_cpu_kernel(const scalar_t* keypoints, const scalar_t* weights, MapSigma<scalar_t> sigma,
                               out_t* heatmaps, scalar_t* weights_out, int64_t B, int64_t N, int64_t K,
                               int height, int width, Encoding encoding) {
  const int64_t map_size = int64_t(height) * width;
  // Enough maps per task to amortise scheduling, few enough to balance two to many cores.
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(map_size, 1));
  torch::stable::parallel_for(0, B * K, grain, [&](int64_t begin, int64_t end) {
    std::vector<GaussianWindow<scalar_t>> windows(N);
    std::vector<scalar_t> col_factor(N * width);  // exp(-dx^2 / 2 sigma^2) per instance, per column
    std::vector<scalar_t> row(width);
    for (int64_t map = begin; map < end; ++map) {
      const int64_t b = map / K, k = map % K;
      const scalar_t s = sigma.at(b, k);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t idx = (b * N + n) * K + k;
        const scalar_t w = weight_at(weights, idx);
        windows[n] = gaussian_window<scalar_t>(keypoints[2 * idx], keypoints[2 * idx + 1], w, s, height, width, encoding);
        weights_out[idx] = windows[n].valid ? w : scalar_t(0);
        const auto& g = windows[n];
        for (int col = g.x0; col <= g.x1; ++col) col_factor[n * width + col] = gaussian_col_factor(g, col);
      }
      out_t* out = heatmaps + map * map_size;
      for (int r = 0; r < height; ++r) {
        std::fill(row.begin(), row.end(), scalar_t(0));
        for (int64_t n = 0; n < N; ++n) {
          const auto& g = windows[n];
          if (!g.valid || r < g.y0 || r > g.y1) continue;
          const scalar_t row_factor = gaussian_row_factor(g, r);
          const scalar_t* cf = col_factor.data() + n * width;
          for (int col = g.x0; col <= g.x1; ++col) {
            row[col] = std::max(row[col], row_factor * cf[col]);
          }
        }
        out_t* out_row = out + int64_t(r) * width;
        for (int col = 0; col < width; ++col) out_row[col] = static_cast<out_t>(row[col]);
      }
    }
  });
}

template <typename scalar_t, typename grad_t>
void render_backward_cpu_kernel(StridedMaps<grad_t> grad, const scalar_t* keypoints, const scalar_t* weights,
                                MapSigma<scalar_t> sigma, scalar_t* grad_keypoints, scalar_t* grad_sigma, int64_t B,
                                int64_t N, int64_t K, int height, int width, Encoding encoding) {
  using acc_t = double;  // float sums over a map accumulate in double on CPU
  torch::stable::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
    std::vector<GaussianWindow<scalar_t>> windows(N);
    std::vector<acc_t> gx(N), gy(N);
    for (int64_t map = begin; map < end; ++map) {
      const int64_t b = map / K, k = map % K;
      const scalar_t s = sigma.at(b, k);
      // The pixels any instance touches: the union of the windows.
      int r0 = height, r1 = -1, c0 = width, c1 = -1;
      for (int64_t n = 0; n < N; ++n) {
        const int64_t idx = (b * N + n) * K + k;
        windows[n] = gaussian_window<scalar_t>(keypoints[2 * idx], keypoints[2 * idx + 1], weight_at(weights, idx), s,
                                               height, width, encoding);
        gx[n] = gy[n] = acc_t(0);
        if (windows[n].valid) {
          r0 = std::min(r0, windows[n].y0);
          r1 = std::max(r1, windows[n].y1);
          c0 = std::min(c0, windows[n].x0);
          c1 = std::max(c1, windows[n].x1);
        }
      }
      acc_t gs = acc_t(0);
      const grad_t* g_map = grad.map(b, k);
      for (int r = r0; r <= r1; ++r) {
        for (int c = c0; c <= c1; ++c) {
          // The map is the max over instances; the gradient goes to the first maximal one.
          int64_t best = -1;
          scalar_t best_value = scalar_t(0);
          for (int64_t n = 0; n < N; ++n) {
            const scalar_t v = gaussian_value(windows[n], r, c);
            if (v > best_value) {
              best_value = v;
              best = n;
            }
          }
          if (best < 0) continue;
          const auto& g = windows[best];
          const acc_t upstream = static_cast<acc_t>(grad.at(g_map, r, c)) * best_value;
          const acc_t dx = acc_t(c) - g.cx, dy = acc_t(r) - g.cy;
          const acc_t two_c = acc_t(2) * g.inv_two_sigma_sq;  // 1 / sigma^2
          gx[best] += upstream * dx * two_c;
          gy[best] += upstream * dy * two_c;
          gs += upstream * (dx * dx + dy * dy) * two_c / acc_t(s);
        }
      }
      const bool moves_with_keypoint = encoding != Encoding::MSRA;  // MSRA centres are rounded
      for (int64_t n = 0; n < N; ++n) {
        const int64_t idx = (b * N + n) * K + k;
        grad_keypoints[2 * idx] = moves_with_keypoint ? static_cast<scalar_t>(gx[n]) : scalar_t(0);
        grad_keypoints[2 * idx + 1] = moves_with_keypoint ? static_cast<scalar_t>(gy[n]) : scalar_t(0);
      }
      grad_sigma[map] = static_cast<scalar_t>(gs);
    }
  });
}

}  // namespace

std::tuple<Tensor, Tensor> render_heatmaps_cpu(Tensor keypoints, OptionalTensor weights, OptionalTensor sigma,
                                               double sigma_value, int64_t height, int64_t width, std::string encoding,
                                               ScalarType dtype) {
  check_render_forward(keypoints, weights, sigma, sigma_value, height, width, dtype);
  const Encoding enc = encoding_from_string(encoding);
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  const ScalarType compute = keypoints.scalar_type();
  Tensor heatmaps = new_empty(keypoints, {B, K, height, width}, dtype);
  // The kernel writes every weight (also for empty maps: every window is then off the map).
  Tensor weights_out = new_empty(keypoints, {B, N, K}, compute);
  if (B * K == 0) return {heatmaps, weights_out};
  KPF_DISPATCH_FLOAT_AND_DOUBLE(compute, "render_heatmaps_cpu", [&] {
    using compute_t = scalar_t;
    KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(dtype, "render_heatmaps_cpu_out", [&] {
      render_forward_cpu_kernel<compute_t, scalar_t>(
          keypoints.const_data_ptr<compute_t>(), weights_data<compute_t>(weights),
          map_sigma<compute_t>(sigma, sigma_value), heatmaps.mutable_data_ptr<scalar_t>(),
          weights_out.mutable_data_ptr<compute_t>(), B, N, K, static_cast<int>(height), static_cast<int>(width), enc);
    });
  });
  return {heatmaps, weights_out};
}

std::tuple<Tensor, Tensor> render_heatmaps_backward_cpu(Tensor grad_heatmaps, Tensor keypoints, OptionalTensor weights,
                                                        OptionalTensor sigma, double sigma_value,
                                                        std::string encoding) {
  check_keypoint_inputs(keypoints, weights, sigma, sigma_value);
  const Encoding enc = encoding_from_string(encoding);
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  STD_TORCH_CHECK(grad_heatmaps.dim() == 4 && grad_heatmaps.size(0) == B && grad_heatmaps.size(1) == K,
                  "grad_heatmaps must have shape (", B, ", ", K, ", H, W), got ", shape_of(grad_heatmaps));
  check_same_device(grad_heatmaps, "grad_heatmaps", keypoints, "keypoints");
  const Tensor& grad = grad_heatmaps;  // read with its strides (an expanded upstream is not copied)
  // Every element is written by the kernel (0 for ignored keypoints), so no zero fill.
  Tensor grad_keypoints = new_empty(keypoints, {B, N, K, 2}, keypoints.scalar_type());
  // grad_sigma is (B, K) contiguous whatever sigma's form (None, an expanded (K,) view, strided).
  Tensor grad_sigma = new_empty(keypoints, {B, K}, keypoints.scalar_type());
  if (B * K == 0) return {grad_keypoints, grad_sigma};
  KPF_DISPATCH_FLOAT_AND_DOUBLE(keypoints.scalar_type(), "render_heatmaps_backward_cpu", [&] {
    using compute_t = scalar_t;
    KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(grad.scalar_type(), "render_backward_cpu_grad", [&] {
      render_backward_cpu_kernel<compute_t, scalar_t>(
          strided_maps<scalar_t>(grad), keypoints.const_data_ptr<compute_t>(), weights_data<compute_t>(weights),
          map_sigma<compute_t>(sigma, sigma_value),
          grad_keypoints.mutable_data_ptr<compute_t>(), grad_sigma.mutable_data_ptr<compute_t>(), B, N, K,
          static_cast<int>(grad.size(2)), static_cast<int>(grad.size(3)), enc);
    });
  });
  return {grad_keypoints, grad_sigma};
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CPU, m) {
  m.impl("render_heatmaps", TORCH_BOX(&render_heatmaps_cpu));
  m.impl("_render_heatmaps_backward", TORCH_BOX(&render_heatmaps_backward_cpu));
}

}  // namespace kpfast
