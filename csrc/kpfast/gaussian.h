// The Gaussian target rule shared by every compiled kernel (render, and the fused loss that
// renders its target on the fly). One definition keeps the CPU and CUDA kernels bit-for-bit
// on the same rule; kpfast/reference/render.py is the PyTorch statement of the same rule.
#pragma once

#include <cmath>
#include <cstdint>

#include "kpfast/host_device.h"

namespace kpfast {

// Encodings, in the order of the schema's string argument (see encoding_from_string).
enum class Encoding : int { MSRA = 0, UDP = 1, DARK = 2 };

// Per-map sigma as every kernel receives it: a (B, K) view with any strides (a per-keypoint (K,)
// sigma arrives expanded, stride_b = 0, so no copy is made), or, when `data` is null, one value for
// every map (a float sigma: no tensor is created, no launch is spent on it).
template <typename T>
struct MapSigma {
  const T* data;
  int64_t stride_b, stride_k;
  T value;
  KPF_HOST_DEVICE T at(int64_t b, int64_t k) const { return data ? data[b * stride_b + k * stride_k] : value; }
};

// A (B, K, H, W) tensor read in place with its strides: render's upstream gradient, which autograd
// hands over expanded (heatmaps.sum(): every stride 0) or as any view. A contiguous copy would cost
// a map-sized pass and a second launch per backward call.
template <typename T>
struct StridedMaps {
  const T* data;
  int64_t stride_b, stride_k, stride_h, stride_w;
  KPF_HOST_DEVICE const T* map(int64_t b, int64_t k) const { return data + b * stride_b + k * stride_k; }
  KPF_HOST_DEVICE T at(const T* map_start, int row, int col) const {
    return map_start[row * stride_h + col * stride_w];
  }
};

// Keypoint weights (B, N, K), contiguous, or null when the caller passed none: every weight is 1.
template <typename T>
KPF_HOST_DEVICE T weight_at(const T* weights, int64_t index) {
  return weights ? weights[index] : T(1);
}

// Where one keypoint's Gaussian lives on an H x W map.
template <typename T>
struct GaussianWindow {
  bool valid;        // false: ignored keypoint (zero heatmap, weight 0, zero gradient)
  T cx, cy;          // centre the Gaussian is evaluated at
  int x0, x1;        // inclusive column range, already clipped to the map
  int y0, y1;        // inclusive row range, already clipped to the map
  T inv_two_sigma_sq;
};

template <typename T>
KPF_HOST_DEVICE bool is_finite_value(T v) {
  // Written out rather than std::isfinite so that fast-math builds keep the test.
  return v == v && v < T(INFINITY) && v > T(-INFINITY);
}

// The published MSRA/UDP rule: the centre is rounded, mu = floor(kp + 0.5); the window is the
// square of radius R = floor(3 sigma) around mu; a window wholly outside the map zeroes the
// keypoint's weight. MSRA evaluates the Gaussian at mu, UDP and DARK at the exact keypoint;
// DARK does not truncate (the window is the whole map). All comparisons are made in floating
// point before any conversion to int, so huge or non-finite coordinates cannot overflow.
//
// gaussian_window_scaled takes 1 / (2 sigma^2) precomputed (every instance of a map shares sigma), so
// that a kernel recomputing windows in a loop has no division there; gaussian_window computes it.
template <typename T>
KPF_HOST_DEVICE GaussianWindow<T> gaussian_window_scaled(T x, T y, T weight, T sigma, T inv_two_sigma_sq, int height,
                                                         int width, Encoding encoding) {
  GaussianWindow<T> g;
  g.valid = false;
  g.cx = T(0);
  g.cy = T(0);
  g.x0 = 0;
  g.x1 = -1;
  g.y0 = 0;
  g.y1 = -1;
  g.inv_two_sigma_sq = T(0);
  if (!(is_finite_value(x) && is_finite_value(y) && is_finite_value(weight) && weight >= T(0.5) &&
        is_finite_value(sigma) && sigma > T(0))) {
    return g;
  }
  const T radius = floor(T(3) * sigma);
  const T mu_x = floor(x + T(0.5));
  const T mu_y = floor(y + T(0.5));
  if (mu_x - radius > T(width - 1) || mu_x + radius < T(0) || mu_y - radius > T(height - 1) ||
      mu_y + radius < T(0)) {
    return g;
  }
  g.valid = true;
  g.inv_two_sigma_sq = inv_two_sigma_sq;
  if (encoding == Encoding::MSRA) {
    g.cx = mu_x;
    g.cy = mu_y;
  } else {
    g.cx = x;
    g.cy = y;
  }
  if (encoding == Encoding::DARK) {
    g.x0 = 0;
    g.x1 = width - 1;
    g.y0 = 0;
    g.y1 = height - 1;
  } else {
    // Safe conversions: each bound was compared against the map above.
    g.x0 = mu_x - radius < T(0) ? 0 : static_cast<int>(mu_x - radius);
    g.x1 = mu_x + radius > T(width - 1) ? width - 1 : static_cast<int>(mu_x + radius);
    g.y0 = mu_y - radius < T(0) ? 0 : static_cast<int>(mu_y - radius);
    g.y1 = mu_y + radius > T(height - 1) ? height - 1 : static_cast<int>(mu_y + radius);
  }
  return g;
}

// The rendered map uses the Gaussian's separable form, exp(-dx^2 c) * exp(-dy^2 c): each instance
// then costs one exponential per column and per row (computed once per map or tile), and a pixel
// is one product. The render kernels (CPU and CUDA) both compute a pixel as
// gaussian_row_factor(g, row) * gaussian_col_factor(g, col), so they stay on one rule; it differs
// from gaussian_value's exp(-(dx^2 + dy^2) c) by rounding only (an ulp or two).
template <typename T>
KPF_HOST_DEVICE T gaussian_col_factor(const GaussianWindow<T>& g, int col) {
  if (!g.valid || col < g.x0 || col > g.x1) return T(0);
  const T dx = T(col) - g.cx;
  return exp(-dx * dx * g.inv_two_sigma_sq);
}

template <typename T>
KPF_HOST_DEVICE T gaussian_row_factor(const GaussianWindow<T>& g, int row) {
  if (!g.valid || row < g.y0 || row > g.y1) return T(0);
  const T dy = T(row) - g.cy;
  return exp(-dy * dy * g.inv_two_sigma_sq);
}

template <typename T>
KPF_HOST_DEVICE GaussianWindow<T> gaussian_window(T x, T y, T weight, T sigma, int height, int width,
                                                  Encoding encoding) {
  return gaussian_window_scaled(x, y, weight, sigma, T(1) / (T(2) * sigma * sigma), height, width, encoding);
}

// Value of the Gaussian at pixel (row, col); zero outside its window.
template <typename T>
KPF_HOST_DEVICE T gaussian_value(const GaussianWindow<T>& g, int row, int col) {
  if (!g.valid || col < g.x0 || col > g.x1 || row < g.y0 || row > g.y1) {
    return T(0);
  }
  const T dx = T(col) - g.cx;
  const T dy = T(row) - g.cy;
  return exp(-(dx * dx + dy * dy) * g.inv_two_sigma_sq);
}

// One separable factor of a keypoint's Gaussian: exp(-(i - centre)^2 c) for a row or column index
// i in the window's [lo, hi], else 0. Kernels that tabulate the factors once per map (the fused
// loss) take the target of pixel (row, col) as
//   separable_factor(row, g.cy, g.y0, g.y1, c) * separable_factor(col, g.cx, g.x0, g.x1, c),
// which equals gaussian_value up to the rounding of one product of two exponentials (an ulp or
// two) and is zero outside the window and for an invalid keypoint (then call with lo > hi).
template <typename T>
KPF_HOST_DEVICE T separable_factor(int index, T centre, int lo, int hi, T inv_two_sigma_sq) {
  if (index < lo || index > hi) return T(0);
  const T d = T(index) - centre;
  return exp(-d * d * inv_two_sigma_sq);
}

}  // namespace kpfast
