// CUDA kernels for Op 3, heatmap decoding.
//
// decode / soft-argmax forward: one warp per map, four maps per block. Lanes stride over the
// map (coalesced loads) so that it is read from DRAM exactly once; the argmax (first maximum in
// row-major order) and the online softmax are reduced with warp shuffles. DARK/UDP then need the
// blurred map at a few pixels only: the warp computes the 5x5 patch of blurred values around
// the argmax separably from the ORIGINAL map (its rows are still in L1/L2) - rows into shared
// memory, then columns - and lane 0 takes the Taylor step (csrc/kpfast/decode.h). The whole
// blurred map is only computed, without being stored, when MMPose's rescaling can matter.
//
// soft-argmax backward: element-wise over the maps (read the map, write the gradient once).
//
// find_peaks: one block per map. Threads test every pixel against its window (L1 hits) and
// append peaks to a shared-memory list; the top P are taken by P block-wide arg-max rounds over
// that list with the strict order (score desc, index asc), so the result is deterministic.
#include <cfloat>
#include <climits>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace kpfast {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kHorizontalRows = kPatch + 2 * (kMaxBlurKernel / 2);  // rows of the horizontal pass

struct Taps {
  float g[kMaxBlurKernel];
};

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

// The first maximum: a larger value, or an equal one earlier in row-major order. NaN is never
// stored (the scan skips it), so this order never sees one.
struct FirstMaximum {
  __device__ __forceinline__ bool operator()(float a, int64_t a_index, float b, int64_t b_index) const {
    return a > b || (a == b && a_index < b_index);
  }
};

template <typename scalar_t>
__device__ float blurred_maximum(const scalar_t* m, int height, int width, const Taps& taps, int k, int lane) {
  const int radius = k / 2;
  float best = -INFINITY;
  const int64_t size = int64_t(height) * width;
  for (int64_t p = lane; p < size; p += kWarp) {
    const int row = static_cast<int>(p / width), col = static_cast<int>(p % width);
    float s = 0.0f;
    for (int d = 0; d < k; ++d) {
      const int r = row + d - radius;
      if (r < 0 || r >= height) continue;
      float h = 0.0f;
      for (int j = 0; j < k; ++j) {
        const int c = col + j - radius;
        if (c >= 0 && c < width) h += taps.g[j] * to_float(m[int64_t(r) * width + c]);
      }
      s += taps.g[d] * h;
    }
    best = fmaxf(best, s);
  }
  return warp_max(best);
}

template <typename scalar_t>
__global__ void decode_kernel(const scalar_t* __restrict__ heatmaps, float* __restrict__ coords,
                              float* __restrict__ scores, int64_t maps, int height, int width, DecodeMethod method,
                              Taps taps, int k, int window) {
  __shared__ float horizontal[kWarpsPerBlock][kHorizontalRows * kPatch];
  __shared__ float patches[kWarpsPerBlock][kPatch * kPatch];
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t map = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (map >= maps) return;  // whole warps leave together
  const int64_t size = int64_t(height) * width;
  const scalar_t* m = heatmaps + map * size;

  // 1. First maximum: each lane visits increasing indices (strict > keeps its first), then
  //    the warp keeps the smallest index among equal values. Four loads in flight per lane.
  //    NaN pixels are skipped (DESIGN.md); index stays INT64_MAX while a lane has seen only NaN,
  //    so the first -inf is taken too and an all-NaN map is recognised.
  float best = -INFINITY;
  int64_t index = INT64_MAX;
  int64_t p = lane;
  for (; p + 3 * kWarp < size; p += 4 * kWarp) {
    float v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = to_float(m[p + u * kWarp]);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (v[u] > best || (index == INT64_MAX && v[u] == v[u])) {
        best = v[u];
        index = p + u * kWarp;
      }
    }
  }
  for (; p < size; p += kWarp) {
    const float v = to_float(m[p]);
    if (v > best || (index == INT64_MAX && v == v)) {
      best = v;
      index = p;
    }
  }
  warp_best(best, index, FirstMaximum{});
  if (index == INT64_MAX) {  // an all-NaN map: coords -1, score NaN
    index = 0;
    best = NAN;
  }
  const int x = static_cast<int>(index % width), y = static_cast<int>(index / width);
  const bool positive = best > 0.0f;
  float ox = 0.0f, oy = 0.0f;

  if (positive && method == DecodeMethod::QUARTER) {
    if (lane == 0 && x > 1 && x < width - 1 && y > 1 && y < height - 1) {
      const scalar_t* at = m + int64_t(y) * width + x;
      quarter_offset(to_float(at[0]), to_float(at[-1]), to_float(at[1]), to_float(at[-width]), to_float(at[width]),
                     &ox, &oy);
    }
  } else if (positive && method == DecodeMethod::LOCAL_MEAN) {
    const int radius = window / 2, side = window;
    float total = 0.0f, sx = 0.0f, sy = 0.0f;
    bool finite = true;  // a non-finite value in the window leaves the integer argmax
    for (int e = lane; e < side * side; e += kWarp) {
      const int dy = e / side - radius, dx = e % side - radius;
      const int row = y + dy, col = x + dx;
      if (row < 0 || row >= height || col < 0 || col >= width) continue;
      const float v = to_float(m[int64_t(row) * width + col]);
      finite = finite && is_finite_value(v);
      const float w = v > 0.0f ? v : 0.0f;
      total += w;
      sx += w * dx;
      sy += w * dy;
    }
    total = warp_sum(total);
    sx = warp_sum(sx);
    sy = warp_sum(sy);
    if (__all_sync(kFullMask, finite)) {
      ox = sx / total;
      oy = sy / total;
    }
  } else if (positive && (method == DecodeMethod::DARK || method == DecodeMethod::UDP)) {
    const bool dark = method == DecodeMethod::DARK;
    if (!dark || (x > 1 && x < width - 2 && y > 1 && y < height - 2)) {
      // 2. Horizontal pass: rows y-2-R .. y+2+R (zero outside the map) at five clamped columns.
      const int radius = k / 2, rows = kPatch + 2 * radius;
      float* hbuf = horizontal[warp];
      float* patch = patches[warp];
      for (int e = lane; e < rows * kPatch; e += kWarp) {
        const int r = e / kPatch, c = e % kPatch;
        const int row = y - 2 - radius + r;
        const int col = clamp_index(x - 2 + c, width - 1);
        float s = 0.0f;
        if (row >= 0 && row < height) {
          const scalar_t* line = m + int64_t(row) * width;
          for (int j = 0; j < k; ++j) {
            const int cc = col + j - radius;
            if (cc >= 0 && cc < width) s += taps.g[j] * to_float(line[cc]);
          }
        }
        hbuf[e] = s;
      }
      __syncwarp();
      // 3. Vertical pass: the 5x5 patch at clamped rows.
      if (lane < kPatch * kPatch) {
        const int i = lane / kPatch, c = lane % kPatch;
        const int first = clamp_index(y - 2 + i, height - 1) - y + 2;
        float s = 0.0f;
        for (int d = 0; d < k; ++d) s += taps.g[d] * hbuf[(first + d) * kPatch + c];
        patch[lane] = s;
      }
      __syncwarp();
      // 4. The exact rescaling factor only where the floor / clip can be reached.
      const bool need = dark ? dark_needs_scale(patch) : udp_needs_scale(patch, best);
      float scale = 1.0f;
      if (need) scale = best / blurred_maximum(m, height, width, taps, k, lane);
      if (lane == 0) {
        if (dark) {
          dark_offset(patch, scale, x, y, height, width, &ox, &oy);
        } else {
          udp_offset(patch, scale, &ox, &oy);
        }
      }
    }
  }
  if (lane == 0) {
    coords[2 * map] = positive ? static_cast<float>(x) + ox : -1.0f;
    coords[2 * map + 1] = positive ? static_cast<float>(y) + oy : -1.0f;
    scores[map] = best;
  }
}

// ---- soft-argmax --------------------------------------------------------------------------

template <typename acc_t>
__device__ __forceinline__ acc_t exp_of(acc_t v) {
  return exp(v);
}
template <>
__device__ __forceinline__ float exp_of<float>(float v) {
  return expf(v);
}

// Online softmax state: max, sum of exp(beta (h - max)), and that sum weighted by x and y.
template <typename acc_t>
struct SoftState {
  acc_t m, s, sx, sy;
};

template <typename acc_t>
__device__ __forceinline__ SoftState<acc_t> soft_merge(SoftState<acc_t> a, SoftState<acc_t> b, acc_t beta) {
  if (b.s == acc_t(0)) return a;
  if (a.s == acc_t(0)) return b;
  const acc_t m = a.m > b.m ? a.m : b.m;
  const acc_t fa = exp_of<acc_t>(beta * (a.m - m)), fb = exp_of<acc_t>(beta * (b.m - m));
  return {m, a.s * fa + b.s * fb, a.sx * fa + b.sx * fb, a.sy * fa + b.sy * fb};
}

template <typename scalar_t, typename acc_t>
__global__ void soft_argmax_kernel(const scalar_t* __restrict__ heatmaps, acc_t* __restrict__ coords,
                                   acc_t* __restrict__ scores, acc_t* __restrict__ log_normaliser, int64_t maps,
                                   int height, int width, acc_t beta) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t map = int64_t(blockIdx.x) * kWarpsPerBlock + warp;
  if (map >= maps) return;
  const int64_t size = int64_t(height) * width;
  const scalar_t* m = heatmaps + map * size;
  // DESIGN.md: -inf pixels weigh 0 (skipped: exp(beta (-inf - -inf)) would be NaN); a NaN or
  // +inf pixel makes the map's coords and score NaN (flagged, and kept out of the state).
  SoftState<acc_t> st{-INFINITY, 0, 0, 0};
  bool non_finite = false;
  for (int64_t p = lane; p < size; p += kWarp) {
    const acc_t v = static_cast<acc_t>(m[p]);
    if (!(v < acc_t(INFINITY))) {  // NaN or +inf
      non_finite = true;
      continue;
    }
    if (v == acc_t(-INFINITY)) continue;
    const acc_t col = static_cast<acc_t>(p % width), row = static_cast<acc_t>(p / width);
    if (st.s == acc_t(0) || v > st.m) {
      const acc_t f = st.s == acc_t(0) ? acc_t(0) : exp_of<acc_t>(beta * (st.m - v));
      st = {v, st.s * f + 1, st.sx * f + col, st.sy * f + row};
    } else {
      const acc_t e = exp_of<acc_t>(beta * (v - st.m));
      st.s += e;
      st.sx += e * col;
      st.sy += e * row;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    SoftState<acc_t> other{__shfl_xor_sync(kFullMask, st.m, offset), __shfl_xor_sync(kFullMask, st.s, offset),
                           __shfl_xor_sync(kFullMask, st.sx, offset), __shfl_xor_sync(kFullMask, st.sy, offset)};
    st = soft_merge(st, other, beta);
  }
  non_finite = __any_sync(kFullMask, non_finite);
  if (lane == 0) {
    const acc_t nan = acc_t(NAN);
    coords[2 * map] = non_finite ? nan : st.sx / st.s;
    coords[2 * map + 1] = non_finite ? nan : st.sy / st.s;
    scores[map] = non_finite ? nan : st.m;
    log_normaliser[map] = non_finite ? nan : beta * st.m + log(st.s);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void soft_argmax_backward_kernel(const acc_t* __restrict__ grad_coords, const scalar_t* __restrict__ heatmaps,
                                            const acc_t* __restrict__ coords, const acc_t* __restrict__ log_normaliser,
                                            scalar_t* __restrict__ grad, int64_t total, int height, int width,
                                            acc_t beta) {
  const int64_t size = int64_t(height) * width;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t map = i / size, p = i % size;
    const acc_t col = static_cast<acc_t>(p % width), row = static_cast<acc_t>(p / width);
    const acc_t prob = exp_of<acc_t>(beta * static_cast<acc_t>(heatmaps[i]) - log_normaliser[map]);
    const acc_t g = grad_coords[2 * map] * (col - coords[2 * map]) + grad_coords[2 * map + 1] * (row - coords[2 * map + 1]);
    grad[i] = static_cast<scalar_t>(beta * prob * g);
  }
}

// ---- peaks --------------------------------------------------------------------------------

constexpr int kPeakThreads = 256;
constexpr int kPeakCapacity = 2048;

template <typename scalar_t>
__device__ bool is_peak_at(const scalar_t* m, int height, int width, int row, int col, int d, float v) {
  const int r0 = max(0, row - d), r1 = min(height - 1, row + d);
  const int c0 = max(0, col - d), c1 = min(width - 1, col + d);
  for (int r = r0; r <= r1; ++r) {
    for (int c = c0; c <= c1; ++c) {
      const float q = to_float(m[int64_t(r) * width + c]);
      if (q > v || (q == v && (r < row || (r == row && c < col)))) return false;
    }
  }
  return true;
}

// a precedes b: higher score first, then smaller index.
__device__ __forceinline__ bool precedes(float a, int a_index, float b, int b_index) {
  return a > b || (a == b && a_index < b_index);
}
struct PeakOrder {
  __device__ __forceinline__ bool operator()(float a, int64_t a_index, float b, int64_t b_index) const {
    return a > b || (a == b && a_index < b_index);
  }
};

template <typename scalar_t>
__global__ void find_peaks_kernel(const scalar_t* __restrict__ heatmaps, float* __restrict__ coords,
                                  float* __restrict__ scores, bool* __restrict__ valid, int height, int width,
                                  float threshold, int d, int max_peaks) {
  __shared__ float cand_score[kPeakCapacity];
  __shared__ int cand_index[kPeakCapacity];
  __shared__ int count;
  __shared__ float red_score[kPeakThreads / kWarp];
  __shared__ int64_t red_index[kPeakThreads / kWarp];
  const int64_t map = blockIdx.x;
  const int size = height * width;
  const scalar_t* m = heatmaps + map * int64_t(size);
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < size; p += blockDim.x) {
    const float v = to_float(m[p]);
    if (v > threshold && is_peak_at(m, height, width, p / width, p % width, d, v)) {
      const int slot = atomicAdd(&count, 1);
      if (slot < kPeakCapacity) {
        cand_score[slot] = v;
        cand_index[slot] = p;
      }
    }
  }
  __syncthreads();
  const int found = count;
  const bool listed = found <= kPeakCapacity;  // else: rescan the map each round (rare)
  float last_score = INFINITY;
  int last_index = -1;
  for (int round = 0; round < max_peaks; ++round) {
    float best = -INFINITY;
    int best_index = INT_MAX;
    if (listed) {
      for (int e = threadIdx.x; e < found; e += blockDim.x) {
        const float s = cand_score[e];
        const int i = cand_index[e];
        if (precedes(last_score, last_index, s, i) && precedes(s, i, best, best_index)) {
          best = s;
          best_index = i;
        }
      }
    } else {
      for (int p = threadIdx.x; p < size; p += blockDim.x) {
        const float v = to_float(m[p]);
        if (v > threshold && precedes(last_score, last_index, v, p) && precedes(v, p, best, best_index) &&
            is_peak_at(m, height, width, p / width, p % width, d, v)) {
          best = v;
          best_index = p;
        }
      }
    }
    int64_t winner = best_index;
    block_best<kPeakThreads>(best, winner, -INFINITY, INT_MAX, red_score, red_index, PeakOrder{});
    last_score = best;
    last_index = static_cast<int>(winner);
    if (threadIdx.x == 0) {
      const int64_t slot = map * max_peaks + round;
      const bool ok = last_index != INT_MAX;
      valid[slot] = ok;
      scores[slot] = ok ? last_score : 0.0f;
      coords[2 * slot] = ok ? static_cast<float>(last_index % width) : -1.0f;
      coords[2 * slot + 1] = ok ? static_cast<float>(last_index / width) : -1.0f;
    }
  }
}


}  // namespace

std::tuple<Tensor, Tensor> decode_heatmaps_cuda(Tensor heatmaps, std::string method, int64_t blur_kernel,
                                                int64_t window) {
  check_heatmaps(heatmaps, /*allow_double=*/false);
  check_decode_arguments(blur_kernel, window);
  const DecodeMethod chosen = decode_method_from_string(method);
  const CudaDeviceGuard guard(heatmaps);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  Tensor coords = new_empty(heatmaps, {B, K, 2}, ScalarType::Float);
  Tensor scores = new_empty(heatmaps, {B, K}, ScalarType::Float);
  const int64_t maps = B * K;
  if (maps == 0) return {coords, scores};
  const unsigned blocks = grid_for(maps, kWarpsPerBlock);  // 64-bit count: never an int overflow
  Taps taps{};
  opencv_gaussian_kernel(static_cast<int>(blur_kernel), taps.g);
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES(heatmaps.scalar_type(), "decode_heatmaps_cuda", [&] {
    decode_kernel<scalar_t><<<blocks, kWarp * kWarpsPerBlock, 0, stream>>>(
        heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<float>(), scores.mutable_data_ptr<float>(), maps,
        static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)), chosen, taps,
        static_cast<int>(blur_kernel), static_cast<int>(window));
  });
  check_launch("decode_heatmaps_cuda");
  return {coords, scores};
}

std::tuple<Tensor, Tensor, Tensor> soft_argmax_cuda(Tensor heatmaps, double beta) {
  check_heatmaps(heatmaps, /*allow_double=*/true);
  STD_TORCH_CHECK(beta > 0 && std::isfinite(beta), "beta must be finite and > 0, got ", beta);
  const CudaDeviceGuard guard(heatmaps);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  const ScalarType compute = heatmaps.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  Tensor coords = new_empty(heatmaps, {B, K, 2}, compute);
  Tensor scores = new_empty(heatmaps, {B, K}, compute);
  Tensor log_normaliser = new_empty(heatmaps, {B, K}, compute);
  const int64_t maps = B * K;
  if (maps == 0) return {coords, scores, log_normaliser};
  const unsigned blocks = grid_for(maps, kWarpsPerBlock);
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(heatmaps.scalar_type(), "soft_argmax_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_kernel<scalar_t, acc_t><<<blocks, kWarp * kWarpsPerBlock, 0, stream>>>(
        heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<acc_t>(), scores.mutable_data_ptr<acc_t>(),
        log_normaliser.mutable_data_ptr<acc_t>(), maps, static_cast<int>(heatmaps.size(2)),
        static_cast<int>(heatmaps.size(3)), static_cast<acc_t>(beta));
  });
  check_launch("soft_argmax_cuda");
  return {coords, scores, log_normaliser};
}

Tensor soft_argmax_backward_cuda(Tensor grad_coords, Tensor heatmaps, Tensor coords, Tensor log_normaliser,
                                 double beta) {
  check_heatmaps(heatmaps, /*allow_double=*/true);
  check_soft_argmax_backward_inputs(grad_coords, heatmaps, coords, log_normaliser);  // shapes and one device
  const CudaDeviceGuard guard(heatmaps);
  const ScalarType compute = heatmaps.scalar_type() == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
  const Tensor g = to_contiguous(grad_coords, compute);
  const Tensor c = to_contiguous(coords, compute);
  const Tensor l = to_contiguous(log_normaliser, compute);
  Tensor grad = new_empty(heatmaps, {heatmaps.size(0), heatmaps.size(1), heatmaps.size(2), heatmaps.size(3)},
                          heatmaps.scalar_type());
  const int64_t total = heatmaps.numel();
  if (total == 0) return grad;
  const int threads = 256;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + threads - 1) / threads, 65535 * 8));
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(heatmaps.scalar_type(), "soft_argmax_backward_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_backward_kernel<scalar_t, acc_t><<<blocks, threads, 0, stream>>>(
        g.const_data_ptr<acc_t>(), heatmaps.const_data_ptr<scalar_t>(), c.const_data_ptr<acc_t>(),
        l.const_data_ptr<acc_t>(), grad.mutable_data_ptr<scalar_t>(), total, static_cast<int>(heatmaps.size(2)),
        static_cast<int>(heatmaps.size(3)), static_cast<acc_t>(beta));
  });
  check_launch("soft_argmax_backward_cuda");
  return grad;
}

std::tuple<Tensor, Tensor, Tensor> find_peaks_cuda(Tensor heatmaps, double threshold, int64_t min_distance,
                                                   int64_t max_peaks) {
  check_heatmaps(heatmaps, /*allow_double=*/false);
  check_peak_arguments(min_distance, max_peaks);
  const CudaDeviceGuard guard(heatmaps);
  const int64_t B = heatmaps.size(0), K = heatmaps.size(1);
  Tensor coords = new_empty(heatmaps, {B, K, max_peaks, 2}, ScalarType::Float);
  Tensor scores = new_empty(heatmaps, {B, K, max_peaks}, ScalarType::Float);
  Tensor valid = new_empty(heatmaps, {B, K, max_peaks}, ScalarType::Bool);
  const int64_t maps = B * K;
  if (maps == 0) return {coords, scores, valid};
  STD_TORCH_CHECK(heatmaps.size(2) * heatmaps.size(3) < (int64_t(1) << 30), "find_peaks_cuda: maps too large");
  STD_TORCH_CHECK(max_peaks < (int64_t(1) << 31), "find_peaks_cuda: max_peaks must be < 2^31, got ", max_peaks);
  const unsigned blocks = grid_for(maps, 1);
  const int d = static_cast<int>(std::min<int64_t>(min_distance, std::max(heatmaps.size(2), heatmaps.size(3))));
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES(heatmaps.scalar_type(), "find_peaks_cuda", [&] {
    find_peaks_kernel<scalar_t><<<blocks, kPeakThreads, 0, stream>>>(
        heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<float>(), scores.mutable_data_ptr<float>(),
        valid.mutable_data_ptr<bool>(), static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)),
        static_cast<float>(threshold), d, static_cast<int>(max_peaks));
  });
  check_launch("find_peaks_cuda");
  return {coords, scores, valid};
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CUDA, m) {
  m.impl("decode_heatmaps", TORCH_BOX(&decode_heatmaps_cuda));
  m.impl("soft_argmax", TORCH_BOX(&soft_argmax_cuda));
  m.impl("_soft_argmax_backward", TORCH_BOX(&soft_argmax_backward_cuda));
  m.impl("find_peaks", TORCH_BOX(&find_peaks_cuda));
}

}  // namespace kpfast
