// Heatmap decoding rules shared by the CPU and CUDA kernels (Op 3 of DESIGN.md). The PyTorch
// statement of the same rules is kpfast/reference/decode.py; the Triton one kpfast/triton/decode.py.
//
// The kernels never blur a whole map. The refinements read the blurred map at a few pixels
// only: DARK at the 13 points of a 5x5 cross-and-diagonal stencil around the argmax, UDP at
// the 3x3 block (coordinates clamped into the map: MMPose's edge padding). Each blurred value
// is a kernel-size^2 window of the ORIGINAL map, computed separably (rows, then columns, as
// OpenCV does) into a 5x5 "patch" of blurred values at clamped coordinates.
//
// MMPose rescales the blurred map by s = max(original) / max(blurred) before the floor (DARK)
// or the clip (UDP). s >= 1 (a normalised non-negative kernel with zero padding cannot raise
// the maximum of a map whose maximum is positive) and s <= max(original) / blurred(argmax).
// When no floor/clip can be reached for any s in that interval, log(s * b) = log(s) + log(b)
// and s cancels in every difference, so the kernels refine with s = 1. Otherwise (faint or
// pathological maps) they compute max(blurred) over the whole map - the "fallback" - and use
// the exact s. Both paths agree with the reference to float32 rounding.
#pragma once

#include <cmath>

#include "kpfast/gaussian.h"  // KPF_HOST_DEVICE

namespace kpfast {

enum class DecodeMethod : int { ARGMAX = 0, QUARTER = 1, DARK = 2, UDP = 3, LOCAL_MEAN = 4 };

constexpr int kMaxBlurKernel = 31;         // blur kernels are odd, 1..31
constexpr int kPatch = 5;                  // the 5x5 patch of blurred values around the argmax
constexpr float kDarkFloor = 1e-10f;       // DARK: log(max(b, 1e-10))
constexpr float kUdpLow = 1e-3f;           // UDP: log(clip(b, 1e-3, 50))
constexpr float kUdpHigh = 50.0f;
constexpr float kFloat32Eps = 1.1920928955078125e-07f;  // np.finfo(np.float32).eps
constexpr float kScaleMargin = 1e-4f;      // slack for float rounding in the fast-path test

// cv2.getGaussianKernel(n, 0, CV_32F): fixed tables for n <= 9, else sigma = 0.3((n-1)/2 - 1) + 0.8;
// double taps cast to float, normalised by their double sum, cast again.
inline void opencv_gaussian_kernel(int n, float* out) {
  static const double small[5][9] = {
      {1.0},
      {0.25, 0.5, 0.25},
      {0.0625, 0.25, 0.375, 0.25, 0.0625},
      {0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125},
      {0.015625, 0.05078125, 0.1171875, 0.19921875, 0.234375, 0.19921875, 0.1171875, 0.05078125, 0.015625}};
  const double sigma = 0.3 * ((n - 1) * 0.5 - 1) + 0.8;
  const double scale2 = -0.5 / (sigma * sigma);
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    const double x = i - (n - 1) * 0.5;
    const double t = n <= 9 ? small[n >> 1][i] : std::exp(scale2 * x * x);
    out[i] = static_cast<float>(t);
    sum += out[i];
  }
  sum = 1.0 / sum;
  for (int i = 0; i < n; ++i) out[i] = static_cast<float>(out[i] * sum);
}

KPF_HOST_DEVICE int clamp_index(int v, int hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

// True when the scale s of MMPose's rescaling can change the result (see the file comment):
// patch[25] holds blurred values at clamped coordinates, centre at [12].
KPF_HOST_DEVICE bool dark_needs_scale(const float* patch) {
  // The 13 stencil points of DARK's Taylor step.
  const int points[13] = {12, 11, 13, 7, 17, 10, 14, 2, 22, 6, 8, 16, 18};
  for (int i = 0; i < 13; ++i) {
    if (!(patch[points[i]] >= kDarkFloor * (1.0f + kScaleMargin))) return true;
  }
  return false;
}

KPF_HOST_DEVICE bool udp_needs_scale(const float* patch, float original_max) {
  const float centre = patch[12];
  if (!(centre > 0.0f)) return true;
  const float max_scale = original_max / centre * (1.0f + kScaleMargin);
  for (int dy = -1; dy <= 1; ++dy) {
    for (int dx = -1; dx <= 1; ++dx) {
      const float b = patch[(2 + dy) * kPatch + 2 + dx];
      if (!(b >= kUdpLow * (1.0f + kScaleMargin)) || !(b * max_scale <= kUdpHigh)) return true;
    }
  }
  return false;
}

// DESIGN.md: when the refinement patch holds a non-finite value (or the rescaling factor is not
// finite: a +inf maximum), the coordinates stay the integer argmax.
KPF_HOST_DEVICE bool patch_is_finite(const float* patch, float scale) {
  bool finite = is_finite_value(scale);
  for (int i = 0; i < kPatch * kPatch; ++i) finite = finite && is_finite_value(patch[i]);
  return finite;
}

// The Newton step -H^-1 g, or nothing for a singular Hessian or a non-finite step.
KPF_HOST_DEVICE void newton_step(float dx, float dy, float dxx, float dxy, float dyy, float* ox, float* oy) {
  const float det = dxx * dyy - dxy * dxy;
  *ox = 0.0f;
  *oy = 0.0f;
  if (det != 0.0f) {
    const float sx = -(dyy * dx - dxy * dy) / det;
    const float sy = -(dxx * dy - dxy * dx) / det;
    if (is_finite_value(sx) && is_finite_value(sy)) {
      *ox = sx;
      *oy = sy;
    }
  }
}

// DARK's Taylor step from the patch; `scale` is s (1 on the fast path). Refined only when
// 1 < x < W-2 and 1 < y < H-2 (MMPose / DARK's `taylor`).
KPF_HOST_DEVICE void dark_offset(const float* patch, float scale, int x, int y, int height, int width, float* ox,
                                 float* oy) {
  *ox = 0.0f;
  *oy = 0.0f;
  if (!(x > 1 && x < width - 2 && y > 1 && y < height - 2)) return;
  if (!patch_is_finite(patch, scale)) return;
  float v[25];
  for (int i = 0; i < 25; ++i) {
    const float b = scale * patch[i];
    v[i] = logf(b > kDarkFloor ? b : kDarkFloor);
  }
  const float c = v[12];
  const float dx = 0.5f * (v[13] - v[11]);
  const float dy = 0.5f * (v[17] - v[7]);
  const float dxx = 0.25f * (v[14] - 2.0f * c + v[10]);
  const float dxy = 0.25f * (v[18] - v[8] - v[16] + v[6]);
  const float dyy = 0.25f * (v[22] - 2.0f * c + v[2]);
  newton_step(dx, dy, dxx, dxy, dyy, ox, oy);
}

// UDP's step (MMPose refine_keypoints_dark_udp): clip to [1e-3, 50], log, edge padding (the
// patch is at clamped coordinates), Hessian + eps * I. Refined everywhere.
KPF_HOST_DEVICE void udp_offset(const float* patch, float scale, float* ox, float* oy) {
  *ox = 0.0f;
  *oy = 0.0f;
  if (!patch_is_finite(patch, scale)) return;  // the clip would hide a +inf
  float v[9];
  for (int dy = -1; dy <= 1; ++dy) {
    for (int dx = -1; dx <= 1; ++dx) {
      float b = scale * patch[(2 + dy) * kPatch + 2 + dx];
      b = b < kUdpLow ? kUdpLow : (b > kUdpHigh ? kUdpHigh : b);
      v[(1 + dy) * 3 + 1 + dx] = logf(b);
    }
  }
  const float c = v[4], right = v[5], left = v[3], down = v[7], up = v[1];
  const float dx = 0.5f * (right - left);
  const float dy = 0.5f * (down - up);
  const float dxx = right - 2.0f * c + left + kFloat32Eps;
  const float dyy = down - 2.0f * c + up + kFloat32Eps;
  const float dxy = 0.5f * (v[8] - right - down + c + c - left - up + v[0]);
  newton_step(dx, dy, dxx, dxy, dyy, ox, oy);
}

// HRNet get_final_preds: when 1 < x < W-1 and 1 < y < H-1, 0.25 px along the sign of the
// neighbour differences. at(r, c) reads the original map.
KPF_HOST_DEVICE float sign_of(float v) { return v > 0.0f ? 1.0f : (v < 0.0f ? -1.0f : 0.0f); }

// The quarter offset from the argmax value and its four neighbours; none when one is not finite.
KPF_HOST_DEVICE void quarter_offset(float centre, float left, float right, float up, float down, float* ox,
                                    float* oy) {
  const bool finite = is_finite_value(centre) && is_finite_value(left) && is_finite_value(right) &&
                      is_finite_value(up) && is_finite_value(down);
  *ox = finite ? 0.25f * sign_of(right - left) : 0.0f;
  *oy = finite ? 0.25f * sign_of(down - up) : 0.0f;
}

}  // namespace kpfast
