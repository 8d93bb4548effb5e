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

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/ops.h"
#include "kpfast/decode.h"
#include "kpfast/decode_checks.h"

namespace kpfast {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = 4;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr int kHorizontalRows = kPatch + 2 * (kMaxBlurKernel / 2);  // rows of the horizontal pass

struct Taps {
  float g[kMaxBlurKernel];
};

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

// (value, index) of the first maximum of the two, with NaN ignored.
__device__ __forceinline__ void argmax_merge(float& best, int64_t& index, float other, int64_t other_index) {
  if (other > best || (other == best && other_index < index)) {
    best = other;
    index = other_index;
  }
}

__device__ float warp_max(float v) {
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

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
  float best = -INFINITY;
  int64_t index = lane < size ? lane : INT64_MAX;
  int64_t p = lane;
  for (; p + 3 * kWarp < size; p += 4 * kWarp) {
    float v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = to_float(m[p + u * kWarp]);
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      if (v[u] > best) {
        best = v[u];
        index = p + u * kWarp;
      }
    }
  }
  for (; p < size; p += kWarp) {
    const float v = to_float(m[p]);
    if (v > best) {
      best = v;
      index = p;
    }
  }
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(kFullMask, best, offset);
    const int64_t other_index = __shfl_xor_sync(kFullMask, index, offset);
    argmax_merge(best, index, other, other_index);
  }
  if (index == INT64_MAX) index = 0;
  const int x = static_cast<int>(index % width), y = static_cast<int>(index / width);
  const bool positive = best > 0.0f;
  float ox = 0.0f, oy = 0.0f;

  if (positive && method == DecodeMethod::QUARTER) {
    if (lane == 0 && x > 1 && x < width - 1 && y > 1 && y < height - 1) {
      const scalar_t* at = m + int64_t(y) * width + x;
      ox = 0.25f * sign_of(to_float(at[1]) - to_float(at[-1]));
      oy = 0.25f * sign_of(to_float(at[width]) - to_float(at[-width]));
    }
  } else if (positive && method == DecodeMethod::LOCAL_MEAN) {
    const int radius = window / 2, side = window;
    float total = 0.0f, sx = 0.0f, sy = 0.0f;
    for (int e = lane; e < side * side; e += kWarp) {
      const int dy = e / side - radius, dx = e % side - radius;
      const int row = y + dy, col = x + dx;
      if (row < 0 || row >= height || col < 0 || col >= width) continue;
      const float w = fmaxf(to_float(m[int64_t(row) * width + col]), 0.0f);
      total += w;
      sx += w * dx;
      sy += w * dy;
    }
    for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
      total += __shfl_xor_sync(kFullMask, total, offset);
      sx += __shfl_xor_sync(kFullMask, sx, offset);
      sy += __shfl_xor_sync(kFullMask, sy, offset);
    }
    ox = sx / total;
    oy = sy / total;
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
  SoftState<acc_t> st{-INFINITY, 0, 0, 0};
  for (int64_t p = lane; p < size; p += kWarp) {
    const acc_t v = static_cast<acc_t>(m[p]);
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
  if (lane == 0) {
    coords[2 * map] = st.sx / st.s;
    coords[2 * map + 1] = st.sy / st.s;
    scores[map] = st.m;
    log_normaliser[map] = beta * st.m + log(st.s);
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

template <typename scalar_t>
__global__ void find_peaks_kernel(const scalar_t* __restrict__ heatmaps, float* __restrict__ coords,
                                  float* __restrict__ scores, bool* __restrict__ valid, int height, int width,
                                  float threshold, int d, int max_peaks) {
  __shared__ float cand_score[kPeakCapacity];
  __shared__ int cand_index[kPeakCapacity];
  __shared__ int count;
  __shared__ float red_score[kPeakThreads];
  __shared__ int red_index[kPeakThreads];
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
    red_score[threadIdx.x] = best;
    red_index[threadIdx.x] = best_index;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
      if (threadIdx.x < stride &&
          precedes(red_score[threadIdx.x + stride], red_index[threadIdx.x + stride], red_score[threadIdx.x],
                   red_index[threadIdx.x])) {
        red_score[threadIdx.x] = red_score[threadIdx.x + stride];
        red_index[threadIdx.x] = red_index[threadIdx.x + stride];
      }
      __syncthreads();
    }
    last_score = red_score[0];
    last_index = red_index[0];
    __syncthreads();
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

int blocks_for(int64_t maps) { return static_cast<int>((maps + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

std::tuple<at::Tensor, at::Tensor> decode_heatmaps_cuda(const at::Tensor& heatmaps, c10::string_view method,
                                                        int64_t blur_kernel, int64_t window) {
  check_heatmaps(heatmaps, /*allow_double=*/false);
  check_decode_arguments(blur_kernel, window);
  const DecodeMethod chosen = decode_method_from_string(std::string(method));
  const c10::cuda::CUDAGuard guard(heatmaps.device());
  const auto B = heatmaps.size(0), K = heatmaps.size(1);
  const auto options = heatmaps.options().dtype(at::kFloat);
  auto coords = at::empty({B, K, 2}, options);
  auto scores = at::empty({B, K}, options);
  const int64_t maps = B * K;
  if (maps == 0) return {coords, scores};
  TORCH_CHECK(maps < (int64_t(1) << 33), "decode_heatmaps_cuda: too many maps, got ", maps);
  Taps taps{};
  opencv_gaussian_kernel(static_cast<int>(blur_kernel), taps.g);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, heatmaps.scalar_type(), "decode_heatmaps_cuda", [&] {
    decode_kernel<scalar_t><<<blocks_for(maps), kWarp * kWarpsPerBlock, 0, stream>>>(
        heatmaps.data_ptr<scalar_t>(), coords.data_ptr<float>(), scores.data_ptr<float>(), maps,
        static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)), chosen, taps,
        static_cast<int>(blur_kernel), static_cast<int>(window));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {coords, scores};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> soft_argmax_cuda(const at::Tensor& heatmaps, double beta) {
  check_heatmaps(heatmaps, /*allow_double=*/true);
  TORCH_CHECK(beta > 0 && std::isfinite(beta), "beta must be finite and > 0, got ", beta);
  const c10::cuda::CUDAGuard guard(heatmaps.device());
  const auto B = heatmaps.size(0), K = heatmaps.size(1);
  const auto compute = heatmaps.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto options = heatmaps.options().dtype(compute);
  auto coords = at::empty({B, K, 2}, options);
  auto scores = at::empty({B, K}, options);
  auto log_normaliser = at::empty({B, K}, options);
  const int64_t maps = B * K;
  if (maps == 0) return {coords, scores, log_normaliser};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, heatmaps.scalar_type(), "soft_argmax_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_kernel<scalar_t, acc_t><<<blocks_for(maps), kWarp * kWarpsPerBlock, 0, stream>>>(
        heatmaps.data_ptr<scalar_t>(), coords.data_ptr<acc_t>(), scores.data_ptr<acc_t>(),
        log_normaliser.data_ptr<acc_t>(), maps, static_cast<int>(heatmaps.size(2)),
        static_cast<int>(heatmaps.size(3)), static_cast<acc_t>(beta));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {coords, scores, log_normaliser};
}

at::Tensor soft_argmax_backward_cuda(const at::Tensor& grad_coords, const at::Tensor& heatmaps,
                                     const at::Tensor& coords, const at::Tensor& log_normaliser, double beta) {
  check_heatmaps(heatmaps, /*allow_double=*/true);
  const c10::cuda::CUDAGuard guard(heatmaps.device());
  const auto B = heatmaps.size(0), K = heatmaps.size(1);
  TORCH_CHECK(grad_coords.sizes() == at::IntArrayRef({B, K, 2}) && coords.sizes() == grad_coords.sizes(),
              "grad_coords and coords must have shape (", B, ", ", K, ", 2), got ", grad_coords.sizes(), " and ",
              coords.sizes());
  TORCH_CHECK(log_normaliser.sizes() == at::IntArrayRef({B, K}), "log_normaliser must have shape (", B, ", ", K,
              "), got ", log_normaliser.sizes());
  const auto compute = heatmaps.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto g = grad_coords.to(compute).contiguous();
  const auto c = coords.to(compute).contiguous();
  const auto l = log_normaliser.to(compute).contiguous();
  auto grad = at::empty_like(heatmaps);
  const int64_t total = heatmaps.numel();
  if (total == 0) return grad;
  const int threads = 256;
  const int blocks = static_cast<int>(std::min<int64_t>((total + threads - 1) / threads, 65535 * 8));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, heatmaps.scalar_type(), "soft_argmax_backward_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_backward_kernel<scalar_t, acc_t><<<blocks, threads, 0, stream>>>(
        g.data_ptr<acc_t>(), heatmaps.data_ptr<scalar_t>(), c.data_ptr<acc_t>(), l.data_ptr<acc_t>(),
        grad.data_ptr<scalar_t>(), total, static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)),
        static_cast<acc_t>(beta));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return grad;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> find_peaks_cuda(const at::Tensor& heatmaps, double threshold,
                                                               int64_t min_distance, int64_t max_peaks) {
  check_heatmaps(heatmaps, /*allow_double=*/false);
  check_peak_arguments(min_distance, max_peaks);
  const c10::cuda::CUDAGuard guard(heatmaps.device());
  const auto B = heatmaps.size(0), K = heatmaps.size(1);
  const auto options = heatmaps.options().dtype(at::kFloat);
  auto coords = at::empty({B, K, max_peaks, 2}, options);
  auto scores = at::empty({B, K, max_peaks}, options);
  auto valid = at::empty({B, K, max_peaks}, options.dtype(at::kBool));
  const int64_t maps = B * K;
  if (maps == 0) return {coords, scores, valid};
  TORCH_CHECK(heatmaps.size(2) * heatmaps.size(3) < (int64_t(1) << 30), "find_peaks_cuda: maps too large");
  const int d = static_cast<int>(std::min<int64_t>(min_distance, std::max(heatmaps.size(2), heatmaps.size(3))));
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, heatmaps.scalar_type(), "find_peaks_cuda", [&] {
    find_peaks_kernel<scalar_t><<<static_cast<unsigned>(maps), kPeakThreads, 0, stream>>>(
        heatmaps.data_ptr<scalar_t>(), coords.data_ptr<float>(), scores.data_ptr<float>(), valid.data_ptr<bool>(),
        static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)), static_cast<float>(threshold), d,
        static_cast<int>(max_peaks));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {coords, scores, valid};
}

}  // namespace kpfast
