// CPU kernels for Op 3, heatmap decoding: argmax-based decoders with their refinements,
// soft-argmax (forward and fused backward) and peak extraction. One map (b, k) per task of
// torch::stable::parallel_for; each map is read once into L1 (a 64x48 float map is 12 KiB) and every
// later access (refinement stencils, the second pass of the argmax) hits the cache.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/vector_math.h"
#include "kpfast/checks.h"

namespace kpfast {
namespace {

constexpr int kLanes = 16;  // independent accumulators: lets -O3 vectorise the reductions

// Enough maps per task to amortise scheduling, few enough to balance two to many cores.
int64_t grain_for(int64_t map_size) { return std::max<int64_t>(1, 8192 / std::max<int64_t>(map_size, 1)); }

// A map as float32: the input itself, or a converted copy in `buffer` (float16 / bfloat16).
template <typename scalar_t>
const float* as_float(const scalar_t* map, int64_t size, std::vector<float>& buffer) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return map;
  } else {
    buffer.resize(size);
    for (int64_t i = 0; i < size; ++i) buffer[i] = static_cast<float>(map[i]);
    return buffer.data();
  }
}

// Largest key of a float map (16 independent lanes: a vectorised loop), NaN pixels keyed as
// `nan_key`: INT32_MIN to skip them (argmax), INT32_MAX to make the maximum NaN (soft-argmax).
// An all-NaN map gives the key of -inf under INT32_MIN (the lanes' starting value).
KPF_CPU_CLONES int32_t max_key_f32(const float* m, int64_t size, int32_t nan_key) {
  int32_t lanes[kLanes];
  std::fill(lanes, lanes + kLanes, order_key(-std::numeric_limits<float>::infinity()));
  int64_t i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const float v = m[i + j];
      const int32_t key = v != v ? nan_key : order_key(v);
      lanes[j] = key > lanes[j] ? key : lanes[j];
    }
  }
  int32_t best = lanes[0];
  for (int j = 1; j < kLanes; ++j) best = lanes[j] > best ? lanes[j] : best;
  for (; i < size; ++i) {
    const int32_t key = m[i] != m[i] ? nan_key : order_key(m[i]);
    best = key > best ? key : best;
  }
  return best;
}

// First pixel whose key is `key`: whole chunks are tested with a vectorised OR, then the chunk
// that holds it pixel by pixel.
KPF_CPU_CLONES int64_t first_key_f32(const float* m, int64_t size, int32_t key) {
  int64_t p = 0;
  for (; p + kLanes <= size; p += kLanes) {
    int hit = 0;
    for (int j = 0; j < kLanes; ++j) hit |= argmax_key(m[p + j]) == key;
    if (hit) break;
  }
  for (; p < size; ++p) {
    if (argmax_key(m[p]) == key) return p;
  }
  return 0;  // an all-NaN map: pixel 0, whose NaN becomes the score
}

// Index of the first maximum in row-major order, NaN pixels skipped: the largest key, then the
// first pixel holding it (the map is cache-resident for this second, early-exiting pass).
int64_t first_argmax(const float* m, int64_t size) {
  return first_key_f32(m, size, max_key_f32(m, size, INT32_MIN));
}

// The 5x5 patch of blurred values (zero padding) at coordinates clamped into the map, around
// (x, y): rows first, then columns, as OpenCV's separable filter does.
void blur_patch(const float* m, int height, int width, int x, int y, const float* g, int k, float* patch) {
  const int radius = k / 2;
  const int rows = kPatch + 2 * radius;
  float horizontal[kPatch + 2 * kMaxBlurKernel][kPatch];
  int cols[kPatch];
  for (int c = 0; c < kPatch; ++c) cols[c] = clamp_index(x - 2 + c, width - 1);
  for (int r = 0; r < rows; ++r) {
    const int row = y - 2 - radius + r;
    for (int c = 0; c < kPatch; ++c) {
      float s = 0.0f;
      if (row >= 0 && row < height) {
        const float* line = m + int64_t(row) * width;
        const int j0 = std::max(0, radius - cols[c]), j1 = std::min(k, width + radius - cols[c]);
        for (int j = j0; j < j1; ++j) s += g[j] * line[cols[c] + j - radius];
      }
      horizontal[r][c] = s;
    }
  }
  for (int i = 0; i < kPatch; ++i) {
    const int base = clamp_index(y - 2 + i, height - 1) - y + 2;  // first horizontal row of this point
    for (int c = 0; c < kPatch; ++c) {
      float s = 0.0f;
      for (int dr = 0; dr < k; ++dr) s += g[dr] * horizontal[base + dr][c];
      patch[i * kPatch + c] = s;
    }
  }
}

// max over the whole blurred map: the fallback that fixes MMPose's rescaling factor exactly.
float blurred_maximum(const float* m, int height, int width, const float* g, int k, std::vector<float>& tmp) {
  const int radius = k / 2;
  tmp.assign(int64_t(height) * width, 0.0f);
  for (int row = 0; row < height; ++row) {
    for (int col = 0; col < width; ++col) {
      const int j0 = std::max(0, radius - col), j1 = std::min(k, width + radius - col);
      float s = 0.0f;
      for (int j = j0; j < j1; ++j) s += g[j] * m[int64_t(row) * width + col + j - radius];
      tmp[int64_t(row) * width + col] = s;
    }
  }
  float best = -std::numeric_limits<float>::infinity();
  for (int row = 0; row < height; ++row) {
    const int d0 = std::max(0, radius - row), d1 = std::min(k, height + radius - row);
    for (int col = 0; col < width; ++col) {
      float s = 0.0f;
      for (int d = d0; d < d1; ++d) s += g[d] * tmp[int64_t(row + d - radius) * width + col];
      best = s > best ? s : best;
    }
  }
  return best;
}

// The offset one method adds to the argmax (x, y) of map m whose maximum is best > 0.
void refine(const float* m, int height, int width, int x, int y, float best, DecodeMethod method, const float* g,
            int k, int window, std::vector<float>& tmp, float* ox, float* oy) {
  *ox = 0.0f;
  *oy = 0.0f;
  switch (method) {
    case DecodeMethod::ARGMAX:
      return;
    case DecodeMethod::QUARTER: {
      if (x > 1 && x < width - 1 && y > 1 && y < height - 1) {
        const float* row = m + int64_t(y) * width;
        quarter_offset(row[x], row[x - 1], row[x + 1], row[x - width], row[x + width], ox, oy);
      }
      return;
    }
    case DecodeMethod::DARK:
    case DecodeMethod::UDP: {
      const bool dark = method == DecodeMethod::DARK;
      if (dark && !(x > 1 && x < width - 2 && y > 1 && y < height - 2)) return;
      float patch[kPatch * kPatch];
      blur_patch(m, height, width, x, y, g, k, patch);
      float scale = 1.0f;
      if (dark ? dark_needs_scale(patch) : udp_needs_scale(patch, best)) {
        scale = best / blurred_maximum(m, height, width, g, k, tmp);
      }
      if (dark) {
        dark_offset_t<double>(patch, scale, x, y, height, width, ox, oy);  // double: see decode.h
      } else {
        udp_offset_t<double>(patch, scale, ox, oy);
      }
      return;
    }
    case DecodeMethod::LOCAL_MEAN: {
      const int radius = window / 2;
      float total = 0.0f, sx = 0.0f, sy = 0.0f;
      bool finite = true;  // a non-finite value in the window leaves the integer argmax
      for (int dy = -radius; dy <= radius; ++dy) {
        const int row = y + dy;
        if (row < 0 || row >= height) continue;
        for (int dx = -radius; dx <= radius; ++dx) {
          const int col = x + dx;
          if (col < 0 || col >= width) continue;
          const float v = m[int64_t(row) * width + col];
          finite = finite && is_finite_value(v);
          const float w = v > 0.0f ? v : 0.0f;
          total += w;
          sx += w * dx;
          sy += w * dy;
        }
      }
      if (finite) {
        *ox = sx / total;
        *oy = sy / total;
      }
      return;
    }
  }
}

template <typename scalar_t>
void decode_cpu_kernel(const scalar_t* heatmaps, float* coords, float* scores, int64_t maps, int height, int width,
                       DecodeMethod method, int k, int window) {
  float g[kMaxBlurKernel];
  opencv_gaussian_kernel(k, g);
  const int64_t map_size = int64_t(height) * width;
  torch::stable::parallel_for(0, maps, grain_for(map_size), [&](int64_t begin, int64_t end) {
    std::vector<float> buffer, tmp;
    for (int64_t map = begin; map < end; ++map) {
      const float* m = as_float(heatmaps + map * map_size, map_size, buffer);
      const int64_t index = first_argmax(m, map_size);
      const float best = m[index];
      scores[map] = best;
      if (!(best > 0.0f)) {
        coords[2 * map] = -1.0f;
        coords[2 * map + 1] = -1.0f;
        continue;
      }
      const int x = static_cast<int>(index % width), y = static_cast<int>(index / width);
      float ox, oy;
      refine(m, height, width, x, y, best, method, g, k, window, tmp, &ox, &oy);
      const bool clipped = is_refined(method);
      coords[2 * map] = clipped ? clip_to_map(x, ox, width) : static_cast<float>(x) + ox;
      coords[2 * map + 1] = clipped ? clip_to_map(y, oy, height) : static_cast<float>(y) + oy;
    }
  });
}

// ---- soft-argmax --------------------------------------------------------------------------

// One row of the soft-argmax forward, float32: e = exp(beta (h - max)) into a buffer, then its
// sums over eight independent lanes (a plain float reduction would not be vectorised).
KPF_CPU_CLONES void soft_argmax_row_f32(const float* line, int width, float beta, float best, float* e,
                                        float* row_total, float* row_x) {
  for (int col = 0; col < width; ++col) e[col] = VectorMath::exp_nonpositive(beta * (line[col] - best));
  float total[8] = {0, 0, 0, 0, 0, 0, 0, 0}, weighted[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int col = 0;
  for (; col + 8 <= width; col += 8) {
    for (int j = 0; j < 8; ++j) {
      total[j] += e[col + j];
      weighted[j] += e[col + j] * static_cast<float>(col + j);
    }
  }
  for (; col < width; ++col) {
    total[0] += e[col];
    weighted[0] += e[col] * static_cast<float>(col);
  }
  float t = 0.0f, x = 0.0f;
  for (int j = 0; j < 8; ++j) {
    t += total[j];
    x += weighted[j];
  }
  *row_total = t;
  *row_x = x;
}

// One row of the soft-argmax backward, float32: beta p (gx j + row_term), p = exp(beta h - lse).
KPF_CPU_CLONES void soft_argmax_backward_row_f32(const float* line, int width, float beta, float lse, float gx,
                                                 float row_term, float* out) {
  for (int col = 0; col < width; ++col) {
    const float p = VectorMath::exp_nonpositive(beta * line[col] - lse);
    out[col] = beta * p * (gx * static_cast<float>(col) + row_term);
  }
}

template <typename T>
inline T exp_nonpositive_t(T x) {
  if constexpr (std::is_same_v<T, float>) {
    return VectorMath::exp_nonpositive(x);
  } else {
    return std::exp(x);
  }
}

template <typename scalar_t, typename acc_t>
acc_t map_maximum(const scalar_t* m, int64_t size) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    return key_value(max_key_f32(m, size, INT32_MAX));  // one NaN makes the maximum NaN
  } else {
    acc_t best = -std::numeric_limits<acc_t>::infinity();
    for (int64_t i = 0; i < size; ++i) {
      const acc_t v = static_cast<acc_t>(m[i]);
      best = (v > best || v != v) ? v : best;  // NaN stays (NaN > x and x > NaN are false)
    }
    return best;
  }
}

// Per row: e = exp(beta (h - max)) into a buffer (a vectorised map loop), then its sums over
// eight independent lanes (vectorised; a plain float reduction would not be reordered).
template <typename scalar_t, typename acc_t>
void soft_argmax_row(const scalar_t* line, int width, acc_t beta, acc_t best, acc_t* e, acc_t& row_total,
                     acc_t& row_x) {
  if constexpr (std::is_same_v<scalar_t, float>) {
    soft_argmax_row_f32(line, width, beta, best, e, &row_total, &row_x);
    return;
  }
  for (int col = 0; col < width; ++col) e[col] = exp_nonpositive_t<acc_t>(beta * (static_cast<acc_t>(line[col]) - best));
  acc_t total[8] = {0, 0, 0, 0, 0, 0, 0, 0}, weighted[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int col = 0;
  for (; col + 8 <= width; col += 8) {
    for (int j = 0; j < 8; ++j) {
      total[j] += e[col + j];
      weighted[j] += e[col + j] * static_cast<acc_t>(col + j);
    }
  }
  for (; col < width; ++col) {
    total[0] += e[col];
    weighted[0] += e[col] * static_cast<acc_t>(col);
  }
  row_total = 0;
  row_x = 0;
  for (int j = 0; j < 8; ++j) {
    row_total += total[j];
    row_x += weighted[j];
  }
}

template <typename scalar_t, typename acc_t>
void soft_argmax_cpu_kernel(const scalar_t* heatmaps, acc_t* coords, acc_t* scores, acc_t* log_normaliser,
                            int64_t maps, int height, int width, acc_t beta) {
  const int64_t map_size = int64_t(height) * width;
  torch::stable::parallel_for(0, maps, grain_for(map_size), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> e(width);
    for (int64_t map = begin; map < end; ++map) {
      const scalar_t* m = heatmaps + map * map_size;
      const acc_t best = map_maximum<scalar_t, acc_t>(m, map_size);
      // Across rows in double, so that large maps keep float accuracy.
      double total = 0.0, sum_x = 0.0, sum_y = 0.0;
      for (int row = 0; row < height; ++row) {
        acc_t row_total, row_x;
        soft_argmax_row<scalar_t, acc_t>(m + int64_t(row) * width, width, beta, best, e.data(), row_total, row_x);
        total += row_total;
        sum_x += row_x;
        sum_y += static_cast<double>(row_total) * row;
      }
      coords[2 * map] = static_cast<acc_t>(sum_x / total);
      coords[2 * map + 1] = static_cast<acc_t>(sum_y / total);
      // docs/design.md: a NaN or +inf pixel makes the map's coords (already, through exp) and score NaN.
      scores[map] = best == std::numeric_limits<acc_t>::infinity() ? std::numeric_limits<acc_t>::quiet_NaN() : best;
      log_normaliser[map] = beta * best + static_cast<acc_t>(std::log(total));
    }
  });
}

template <typename scalar_t, typename acc_t>
void soft_argmax_backward_cpu_kernel(const acc_t* grad_coords, std::array<int64_t, 3> grad_strides, int64_t K,
                                     const scalar_t* heatmaps, const acc_t* coords, const acc_t* log_normaliser,
                                     scalar_t* grad, int64_t maps, int height, int width, acc_t beta) {
  const int64_t map_size = int64_t(height) * width;
  torch::stable::parallel_for(0, maps, grain_for(map_size), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> row_grad(width);
    for (int64_t map = begin; map < end; ++map) {
      // d x / d h_ij = beta p_ij (j - x), d y / d h_ij = beta p_ij (i - y).
      const acc_t* upstream = grad_coords + (map / K) * grad_strides[0] + (map % K) * grad_strides[1];
      const acc_t gx = upstream[0], gy = upstream[grad_strides[2]];
      const acc_t x = coords[2 * map], y = coords[2 * map + 1], lse = log_normaliser[map];
      const scalar_t* m = heatmaps + map * map_size;
      scalar_t* out = grad + map * map_size;
      for (int row = 0; row < height; ++row) {
        const acc_t row_term = gy * (static_cast<acc_t>(row) - y) - gx * x;
        const scalar_t* line = m + int64_t(row) * width;
        scalar_t* out_row = out + int64_t(row) * width;
        if constexpr (std::is_same_v<scalar_t, float>) {
          soft_argmax_backward_row_f32(line, width, beta, lse, gx, row_term, out_row);
          continue;
        }
        // Straight into the output when it holds acc_t (a vectorised loop), else via a row buffer.
        acc_t* target = std::is_same_v<scalar_t, acc_t> ? reinterpret_cast<acc_t*>(out_row) : row_grad.data();
        for (int col = 0; col < width; ++col) {
          const acc_t p = exp_nonpositive_t<acc_t>(beta * static_cast<acc_t>(line[col]) - lse);
          target[col] = beta * p * (gx * static_cast<acc_t>(col) + row_term);
        }
        if constexpr (!std::is_same_v<scalar_t, acc_t>) {
          for (int col = 0; col < width; ++col) out_row[col] = static_cast<scalar_t>(row_grad[col]);
        }
      }
    }
  });
}

// ---- peaks --------------------------------------------------------------------------------

// Whether pixel (row, col) of value v is a peak: >= every pixel of its (2d+1)^2 window and
// > every earlier one in row-major order (the first pixel of a plateau wins).
inline bool is_peak(const float* m, int height, int width, int row, int col, int d, float v) {
  const int r0 = std::max(0, row - d), r1 = std::min(height - 1, row + d);
  const int c0 = std::max(0, col - d), c1 = std::min(width - 1, col + d);
  for (int r = r0; r <= r1; ++r) {
    const float* line = m + int64_t(r) * width;
    for (int c = c0; c <= c1; ++c) {
      const float q = line[c];
      if (q > v) return false;
      if (q == v && (r < row || (r == row && c < col))) return false;
    }
  }
  return true;
}

template <typename scalar_t>
void find_peaks_cpu_kernel(const scalar_t* heatmaps, float* coords, float* scores, bool* valid, int64_t maps,
                           int height, int width, float threshold, int d, int64_t max_peaks) {
  const int64_t map_size = int64_t(height) * width;
  torch::stable::parallel_for(0, maps, grain_for(map_size), [&](int64_t begin, int64_t end) {
    std::vector<float> buffer;
    std::vector<std::pair<float, int64_t>> found;
    for (int64_t map = begin; map < end; ++map) {
      const float* m = as_float(heatmaps + map * map_size, map_size, buffer);
      found.clear();
      for (int row = 0; row < height; ++row) {
        for (int col = 0; col < width; ++col) {
          const float v = m[int64_t(row) * width + col];
          if (v > threshold && is_peak(m, height, width, row, col, d, v)) {
            found.emplace_back(v, int64_t(row) * width + col);
          }
        }
      }
      // Score descending, then row-major index ascending: a strict total order, so the
      // selection is deterministic.
      const auto before = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
        return a.first > b.first || (a.first == b.first && a.second < b.second);
      };
      const int64_t count = std::min<int64_t>(max_peaks, static_cast<int64_t>(found.size()));
      std::partial_sort(found.begin(), found.begin() + count, found.end(), before);
      for (int64_t p = 0; p < max_peaks; ++p) {
        const int64_t slot = map * max_peaks + p;
        const bool ok = p < count;
        valid[slot] = ok;
        scores[slot] = ok ? found[p].first : 0.0f;
        coords[2 * slot] = ok ? static_cast<float>(found[p].second % width) : -1.0f;
        coords[2 * slot + 1] = ok ? static_cast<float>(found[p].second / width) : -1.0f;
      }
    }
  });
}

}  // namespace

std::tuple<Tensor, Tensor> decode_heatmaps_cpu(Tensor heatmaps, std::string method, int64_t blur_kernel,
                                               int64_t window) {
  check_heatmaps(heatmaps, /*allow_double=*/false);
  check_decode_arguments(blur_kernel, window);
  const DecodeMethod chosen = decode_method_from_string(method);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  Tensor coords = new_empty(heatmaps, {B, K, 2}, ScalarType::Float);
  Tensor scores = new_empty(heatmaps, {B, K}, ScalarType::Float);
  if (B * K == 0) return {coords, scores};
  KPF_DISPATCH_HEATMAP_TYPES(heatmaps.scalar_type(), "decode_heatmaps_cpu", [&] {
    decode_cpu_kernel<scalar_t>(heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<float>(),
                                scores.mutable_data_ptr<float>(), B * K, static_cast<int>(heatmaps.size(2)),
                                static_cast<int>(heatmaps.size(3)), chosen, static_cast<int>(blur_kernel),
                                static_cast<int>(window));
  });
  return {coords, scores};
}

std::tuple<Tensor, Tensor, Tensor> soft_argmax_cpu(Tensor heatmaps, double beta) {
  check_heatmaps(heatmaps, /*allow_double=*/true);
  STD_TORCH_CHECK(beta > 0 && std::isfinite(beta), "beta must be finite and > 0, got ", beta);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  const ScalarType compute = heatmaps.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  Tensor coords = new_empty(heatmaps, {B, K, 2}, compute);
  Tensor scores = new_empty(heatmaps, {B, K}, compute);
  Tensor log_normaliser = new_empty(heatmaps, {B, K}, compute);
  if (B * K == 0) return {coords, scores, log_normaliser};
  KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(heatmaps.scalar_type(), "soft_argmax_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_cpu_kernel<scalar_t, acc_t>(heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<acc_t>(),
                                            scores.mutable_data_ptr<acc_t>(), log_normaliser.mutable_data_ptr<acc_t>(),
                                            B * K, static_cast<int>(heatmaps.size(2)),
                                            static_cast<int>(heatmaps.size(3)), static_cast<acc_t>(beta));
  });
  return {coords, scores, log_normaliser};
}

Tensor soft_argmax_backward_cpu(Tensor grad_coords, Tensor heatmaps, Tensor coords, Tensor log_normaliser,
                                double beta) {
  check_heatmaps(heatmaps, /*allow_double=*/true);
  check_soft_argmax_backward_inputs(grad_coords, heatmaps, coords, log_normaliser);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  const ScalarType compute = heatmaps.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  // grad_coords read with its strides (an expanded upstream is not copied); another dtype is cast.
  const Tensor g = as_dtype(grad_coords, compute);
  const Tensor c = to_contiguous(coords, compute);
  const Tensor l = to_contiguous(log_normaliser, compute);
  Tensor grad = new_empty(heatmaps, {B, K, heatmaps.size(2), heatmaps.size(3)}, heatmaps.scalar_type());
  if (B * K == 0) return grad;
  KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(heatmaps.scalar_type(), "soft_argmax_backward_cpu", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_backward_cpu_kernel<scalar_t, acc_t>(
        g.const_data_ptr<acc_t>(), {g.stride(0), g.stride(1), g.stride(2)}, K, heatmaps.const_data_ptr<scalar_t>(),
        c.const_data_ptr<acc_t>(), l.const_data_ptr<acc_t>(), grad.mutable_data_ptr<scalar_t>(), B * K,
        static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)), static_cast<acc_t>(beta));
  });
  return grad;
}

std::tuple<Tensor, Tensor, Tensor> find_peaks_cpu(Tensor heatmaps, double threshold, int64_t min_distance,
                                                  int64_t max_peaks) {
  check_heatmaps(heatmaps, /*allow_double=*/false);
  check_peak_arguments(min_distance, max_peaks);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  Tensor coords = new_empty(heatmaps, {B, K, max_peaks, 2}, ScalarType::Float);
  Tensor scores = new_empty(heatmaps, {B, K, max_peaks}, ScalarType::Float);
  Tensor valid = new_empty(heatmaps, {B, K, max_peaks}, ScalarType::Bool);
  if (B * K == 0) return {coords, scores, valid};
  const int d = static_cast<int>(std::min<int64_t>(min_distance, std::max(heatmaps.size(2), heatmaps.size(3))));
  KPF_DISPATCH_HEATMAP_TYPES(heatmaps.scalar_type(), "find_peaks_cpu", [&] {
    find_peaks_cpu_kernel<scalar_t>(heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<float>(),
                                    scores.mutable_data_ptr<float>(), valid.mutable_data_ptr<bool>(), B * K,
                                    static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)),
                                    static_cast<float>(threshold), d, max_peaks);
  });
  return {coords, scores, valid};
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CPU, m) {
  m.impl("decode_heatmaps", TORCH_BOX(&decode_heatmaps_cpu));
  m.impl("soft_argmax", TORCH_BOX(&soft_argmax_cpu));
  m.impl("_soft_argmax_backward", TORCH_BOX(&soft_argmax_backward_cpu));
  m.impl("find_peaks", TORCH_BOX(&find_peaks_cpu));
}

}  // namespace kpfast
