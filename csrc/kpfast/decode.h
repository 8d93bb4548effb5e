// Heatmap decoding rules shared by the CPU and CUDA kernels (Op 3 of docs/design.md). The PyTorch
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

// kpfast/vocabulary.py REFINED_DECODE_METHODS: an unbounded offset, so every kernel clips the
// point to the map. The one list the kernels read (tests/ops/test_vocabulary.py checks it).
KPF_HOST_DEVICE constexpr bool is_refined(DecodeMethod method) {
  return method == DecodeMethod::DARK || method == DecodeMethod::UDP;
}

constexpr int kMaxBlurKernel = 31;         // blur kernels are odd, 1..31
constexpr int kPatch = 5;                  // the 5x5 patch of blurred values around the argmax
constexpr float kDarkFloor = 1e-10f;       // DARK: log(max(b, 1e-10))
constexpr float kUdpLow = 1e-3f;           // UDP: log(clip(b, 1e-3, 50))
constexpr float kUdpHigh = 50.0f;
constexpr float kFloat32Eps = 1.1920928955078125e-07f;  // np.finfo(np.float32).eps
constexpr float kScaleMargin = 1e-4f;      // slack for float rounding in the fast-path test

// cv2.getGaussianKernel(n, 0, CV_32F): fixed tables for n <= 9, else sigma = 0.3((n-1)/2 - 1) + 0.8;
// double taps cast to float, normalised by their double sum, cast again.
//
// opencv_raw_tap is tap i before the normalisation. Host and device share it: the CUDA kernel
// computes the taps in the kernel (no table passed by value, which a dynamic index would copy
// to local memory in every thread). OpenCV's fixed tables for n <= 9 are k / 2^m (numerators
// below, symmetric), spelled as switches so that no array is indexed dynamically.
KPF_HOST_DEVICE float opencv_raw_tap(int n, int i) {
  const int j = i < n - 1 - i ? i : n - 1 - i;  // distance from the nearer end
  switch (n) {
    case 1: return 1.0f;
    case 3: return j == 0 ? 0.25f : 0.5f;
    case 5: return j == 0 ? 0.0625f : (j == 1 ? 0.25f : 0.375f);
    case 7: return (j == 0 ? 2.0f : (j == 1 ? 7.0f : (j == 2 ? 14.0f : 18.0f))) / 64.0f;
    case 9: return (j == 0 ? 4.0f : (j == 1 ? 13.0f : (j == 2 ? 30.0f : (j == 3 ? 51.0f : 60.0f)))) / 256.0f;
    default: {
      const double sigma = 0.3 * ((n - 1) * 0.5 - 1) + 0.8;
      const double x = i - (n - 1) * 0.5;
      return static_cast<float>(exp(-0.5 / (sigma * sigma) * x * x));
    }
  }
}

// Tap i normalised by `inverse_sum` = 1 / (the double sum of the n raw float taps, in order i = 0..n-1).
KPF_HOST_DEVICE float opencv_tap(float raw, double inverse_sum) { return static_cast<float>(raw * inverse_sum); }

inline void opencv_gaussian_kernel(int n, float* out) {
  double sum = 0.0;
  for (int i = 0; i < n; ++i) {
    out[i] = opencv_raw_tap(n, i);
    sum += out[i];
  }
  sum = 1.0 / sum;
  for (int i = 0; i < n; ++i) out[i] = opencv_tap(out[i], sum);
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

// docs/design.md: when the refinement patch holds a non-finite value (or the rescaling factor is not
// finite: a +inf maximum), the coordinates stay the integer argmax.
KPF_HOST_DEVICE bool patch_is_finite(const float* patch, float scale) {
  bool finite = is_finite_value(scale);
  for (int i = 0; i < kPatch * kPatch; ++i) finite = finite && is_finite_value(patch[i]);
  return finite;
}

// The Newton step -H^-1 g, or nothing for a singular Hessian or a non-finite step.
//
// The steps are templates on the arithmetic type A. The CPU and CUDA kernels use double, as the
// reference does (kpfast/reference/decode.py): on saturated maps (sigmoid ties at 1.0, e.g. a
// 2x2 plateau of confident logits) the UDP Hessian + eps I is near singular, and float32
// rounding of log values of size eps decided the sign of det, moving the point across the map.
// In double, from the same float32 patch, the step is the reference's to double rounding.
template <typename A>
KPF_HOST_DEVICE void newton_step_t(A dx, A dy, A dxx, A dxy, A dyy, float* ox, float* oy) {
  const A det = dxx * dyy - dxy * dxy;
  *ox = 0.0f;
  *oy = 0.0f;
  if (det != A(0)) {
    const A sx = -(dyy * dx - dxy * dy) / det;
    const A sy = -(dxx * dy - dxy * dx) / det;
    if (is_finite_value(sx) && is_finite_value(sy)) {
      *ox = static_cast<float>(sx);
      *oy = static_cast<float>(sy);
    }
  }
}

KPF_HOST_DEVICE float log_t(float v) { return logf(v); }
KPF_HOST_DEVICE double log_t(double v) { return log(v); }

// DARK's Taylor step from the patch; `scale` is s (1 on the fast path). Refined only when
// 1 < x < W-2 and 1 < y < H-2 (MMPose / DARK's `taylor`).
template <typename A>
KPF_HOST_DEVICE void dark_offset_t(const float* patch, float scale, int x, int y, int height, int width, float* ox,
                                   float* oy) {
  *ox = 0.0f;
  *oy = 0.0f;
  if (!(x > 1 && x < width - 2 && y > 1 && y < height - 2)) return;
  if (!patch_is_finite(patch, scale)) return;
  A v[25];
  for (int i = 0; i < 25; ++i) {
    const A b = A(scale) * A(patch[i]);
    v[i] = log_t(b > A(1e-10) ? b : A(1e-10));  // kDarkFloor, exact in A as in the reference
  }
  const A c = v[12];
  const A dx = A(0.5) * (v[13] - v[11]);
  const A dy = A(0.5) * (v[17] - v[7]);
  const A dxx = A(0.25) * (v[14] - A(2) * c + v[10]);
  const A dxy = A(0.25) * (v[18] - v[8] - v[16] + v[6]);
  const A dyy = A(0.25) * (v[22] - A(2) * c + v[2]);
  newton_step_t<A>(dx, dy, dxx, dxy, dyy, ox, oy);
}

// UDP's step (MMPose refine_keypoints_dark_udp): clip to [1e-3, 50], log, edge padding (the
// patch is at clamped coordinates), Hessian + eps * I. Refined everywhere.
template <typename A>
KPF_HOST_DEVICE void udp_offset_t(const float* patch, float scale, float* ox, float* oy) {
  *ox = 0.0f;
  *oy = 0.0f;
  if (!patch_is_finite(patch, scale)) return;  // the clip would hide a +inf
  A v[9];
  for (int dy = -1; dy <= 1; ++dy) {
    for (int dx = -1; dx <= 1; ++dx) {
      A b = A(scale) * A(patch[(2 + dy) * kPatch + 2 + dx]);
      b = b < A(1e-3) ? A(1e-3) : (b > A(50.0) ? A(50.0) : b);  // kUdpLow, kUdpHigh
      v[(1 + dy) * 3 + 1 + dx] = log_t(b);
    }
  }
  const A c = v[4], right = v[5], left = v[3], down = v[7], up = v[1];
  const A dx = A(0.5) * (right - left);
  const A dy = A(0.5) * (down - up);
  const A dxx = right - A(2) * c + left + A(kFloat32Eps);
  const A dyy = down - A(2) * c + up + A(kFloat32Eps);
  const A dxy = A(0.5) * (v[8] - right - down + c + c - left - up + v[0]);
  newton_step_t<A>(dx, dy, dxx, dxy, dyy, ox, oy);
}

// DARK/UDP coordinates clipped to the area the map covers, [-0.5, size - 0.5] (pixel i covers
// [i - 0.5, i + 0.5]): a near-singular Hessian makes the Newton step arbitrarily long, and a
// keypoint outside its heatmap is never a better answer than its border (kpfast/reference/
// decode.py clip_to_map). `integer` + `offset` is the refined coordinate along an axis of `size`
// pixels; the offset is finite (newton_step_t returns 0 otherwise).
KPF_HOST_DEVICE float clip_to_map(int integer, float offset, int size) {
  const float v = static_cast<float>(integer) + offset;
  const float lo = -0.5f, hi = static_cast<float>(size) - 0.5f;
  return v < lo ? lo : (v > hi ? hi : v);
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
