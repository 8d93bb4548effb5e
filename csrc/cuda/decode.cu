// CUDA kernels for Op 3, heatmap decoding.
//
// Decoding and the soft-argmax forward read each map once and reduce it to a few numbers, so
// they are bound by how many bytes are in flight. One 128-thread block per map (B*K = 1088 maps
// at B=64, K=17: 8.2 blocks = 33 warps per SM on 132 SMs, where one warp per map gave 8 warps;
// the launch bounds let 9 blocks per SM reside, so they run in one wave); each thread issues
// kUnroll 16-byte loads (4 fp32 / 8 bf16 or fp16 / 2 fp64) before it uses any: 8 blocks x 128
// threads x 64 B = 64 KB in flight per SM, against the ~15 KB that 3.35 TB/s x ~600 ns of
// latency needs per SM. A map splits into a scalar head (up to the first 16-byte
// boundary), 16-byte vectors, and a scalar tail (split_map); the loads past the last vector are
// predicated off and replaced by a value that cannot change the result (NaN for the argmax,
// -inf for the softmax).
//
// decode: the first maximum (ties -> smallest row-major index; NaN skipped) per thread, then
// across the block. DARK/UDP need the blurred map at a few pixels only: the block computes the
// 5x5 patch of blurred values around the argmax separably from the ORIGINAL map (now in L1/L2),
// with the blur taps computed in the kernel into shared memory (DARK/UDP only), and thread 0
// takes the Taylor step (csrc/kpfast/decode.h, shared with the CPU kernel, as is the clip to
// the map). The whole blurred map is computed, by the block and without being stored, only when
// MMPose's rescaling can matter.
//
// soft-argmax forward: the online softmax by chunks: per kUnroll vectors one maximum, one
// rescale of the running sums, then one exp per element. Each vector's coordinates are tracked
// incrementally (no division per element): sum x = col0 S + sum j e_j - W (the weight that
// wrapped to the next row), sum y = row0 S + (that weight).
//
// soft-argmax backward: a 2-D grid (map, tile of vectors): the map's constants are loaded once
// per block, the map read and the gradient written with 16-byte accesses, no division per element.
//
// find_peaks: one block per map; the map is staged in shared memory as float (16-byte loads)
// when it fits (96x72 = 27 KB), so the (2d+1)^2 window tests read shared memory; larger maps
// test against global memory. Peaks go to a shared-memory list; the top P are taken by P
// block-wide arg-max rounds with the strict order (score desc, index asc): deterministic.
#include <cuda_fp16.h>

#include <cfloat>
#include <climits>
#include <cstdint>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace kpfast {
namespace {

constexpr int kMapThreads = 128;  // one block per map: decode, soft-argmax forward
constexpr int kMapWarps = kMapThreads / kWarp;
constexpr int kUnroll = 4;        // 16-byte loads in flight per thread
constexpr int kBackwardThreads = 256;
constexpr int kBackwardTile = kBackwardThreads * kUnroll;  // vectors (or scalars) per block of the backward
constexpr int kHorizontalRows = kPatch + 2 * (kMaxBlurKernel / 2);  // rows of the horizontal pass
constexpr int kBand = 8;          // output rows per thread in the blurred-maximum fallback
constexpr int kNone = INT_MAX;    // no pixel taken yet

template <typename T>
constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

// ---- 16-byte vectors ------------------------------------------------------------------------

// The 16 bytes `raw` as kVec<T> values of acc_t (element 0 in the low bytes: little endian).
template <typename T, typename acc_t>
__device__ __forceinline__ void unpack(const uint4& raw, acc_t (&out)[kVec<T>]) {
  const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
  if constexpr (std::is_same_v<T, float>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = __uint_as_float(w[i]);
  } else if constexpr (std::is_same_v<T, double>) {
    out[0] = __hiloint2double(static_cast<int>(w[1]), static_cast<int>(w[0]));
    out[1] = __hiloint2double(static_cast<int>(w[3]), static_cast<int>(w[2]));
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __uint_as_float(w[i] << 16);
      out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
  } else {
    static_assert(std::is_same_v<T, c10::Half>, "unpack: float, double, bfloat16 or float16");
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] & 0xffffu)));
      out[2 * i + 1] = __half2float(__ushort_as_half(static_cast<unsigned short>(w[i] >> 16)));
    }
  }
}

// kVec<T> values rounded to T (as static_cast<T> does) into 16 bytes.
template <typename T, typename acc_t>
__device__ __forceinline__ uint4 pack(const acc_t (&v)[kVec<T>]) {
  if constexpr (std::is_same_v<T, float>) {
    return make_uint4(__float_as_uint(v[0]), __float_as_uint(v[1]), __float_as_uint(v[2]), __float_as_uint(v[3]));
  } else if constexpr (std::is_same_v<T, double>) {
    return make_uint4(static_cast<unsigned>(__double2loint(v[0])), static_cast<unsigned>(__double2hiint(v[0])),
                      static_cast<unsigned>(__double2loint(v[1])), static_cast<unsigned>(__double2hiint(v[1])));
  } else {
    unsigned w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const unsigned lo = static_cast<T>(v[2 * i]).x, hi = static_cast<T>(v[2 * i + 1]).x;
      w[i] = lo | (hi << 16);
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
  }
}

// A 16-byte vector of NaN (skipped by the argmax) and of -inf (weight 0 in the softmax).
template <typename T>
__device__ __forceinline__ uint4 nan_vector() {
  const unsigned w = std::is_same_v<T, float> ? 0x7fc00000u : (std::is_same_v<T, c10::BFloat16> ? 0x7fc07fc0u : 0x7e007e00u);
  return make_uint4(w, w, w, w);
}
template <typename T>
__device__ __forceinline__ uint4 minus_inf_vector() {
  if constexpr (std::is_same_v<T, double>) return make_uint4(0u, 0xfff00000u, 0u, 0xfff00000u);
  const unsigned w = std::is_same_v<T, float> ? 0xff800000u : (std::is_same_v<T, c10::BFloat16> ? 0xff80ff80u : 0xfc00fc00u);
  return make_uint4(w, w, w, w);
}

// Elements [0, head) are scalars (before the first 16-byte boundary), then `vectors` 16-byte
// vectors, then scalars [tail, size). `vectorise` false: every element is a scalar (head = size).
struct MapSplit {
  int head, vectors, tail;
};
template <typename T>
__device__ __forceinline__ MapSplit split_map(const T* m, int size, bool vectorise) {
  if (!vectorise) return {size, 0, size};
  const int misaligned = static_cast<int>(reinterpret_cast<uintptr_t>(m) % 16) / static_cast<int>(sizeof(T));
  const int head = min(misaligned == 0 ? 0 : kVec<T> - misaligned, size);
  const int vectors = (size - head) / kVec<T>;
  return {head, vectors, head + vectors * kVec<T>};
}

// (row, col) of a thread's next vector: `step` elements on = step_rows rows + step_cols columns.
__device__ __forceinline__ void advance(int& row, int& col, int step_rows, int step_cols, int width) {
  row += step_rows;
  col += step_cols;
  if (col >= width) {
    col -= width;
    ++row;
  }
}

// ---- decode ----------------------------------------------------------------------------------

// The first maximum: a larger value, or an equal one earlier in row-major order. NaN is never
// stored (the scan skips it), so this order never sees one.
struct FirstMaximum {
  __device__ __forceinline__ bool operator()(float a, int64_t a_index, float b, int64_t b_index) const {
    return a > b || (a == b && a_index < b_index);
  }
};

// One pixel of the per-thread scan. A thread visits increasing indices, so the strict > keeps
// its first maximum. NaN is skipped; index stays kNone while only NaN was seen, so the first
// -inf is taken too (an all -inf map has maximum -inf) and an all-NaN map is recognised.
__device__ __forceinline__ void visit(float v, int p, float& best, int& index) {
  if (v > best || (index == kNone && v == -INFINITY)) {
    best = v;
    index = p;
  }
}

template <typename scalar_t>
__device__ __forceinline__ void thread_first_maximum(const scalar_t* __restrict__ m, int size, float& best,
                                                     int& index) {
  constexpr int V = kVec<scalar_t>;
  const MapSplit s = split_map(m, size, true);
  best = -INFINITY;
  index = kNone;
  for (int p = threadIdx.x; p < s.head; p += kMapThreads) visit(to_float(m[p]), p, best, index);
  const uint4* vectors = reinterpret_cast<const uint4*>(m + s.head);
  for (int i = threadIdx.x; i < s.vectors; i += kUnroll * kMapThreads) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {  // every load issued before the first compare
      const int j = i + u * kMapThreads;
      raw[u] = j < s.vectors ? __ldg(vectors + j) : nan_vector<scalar_t>();
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      float v[V];
      unpack<scalar_t>(raw[u], v);
      const int base = s.head + (i + u * kMapThreads) * V;
#pragma unroll
      for (int e = 0; e < V; ++e) visit(v[e], base + e, best, index);
    }
  }
  for (int p = s.tail + threadIdx.x; p < size; p += kMapThreads) visit(to_float(m[p]), p, best, index);
}

// max over the block; every thread gets it. `scratch` holds kMapWarps floats. Contains __syncthreads.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  v = warp_max(v);
  if (threadIdx.x % kWarp == 0) scratch[threadIdx.x / kWarp] = v;
  __syncthreads();
  v = scratch[0];
#pragma unroll
  for (int w = 1; w < kMapWarps; ++w) v = fmaxf(v, scratch[w]);
  __syncthreads();
  return v;
}

// max over the whole blurred map (zero padding), by the block: each thread blurs kBand rows of
// one column, each horizontal sum (k taps) feeding the kBand vertical sums it belongs to. The
// sums run in the CPU kernel's order (taps ascending). Only for faint or pathological maps.
template <typename scalar_t>
__device__ __forceinline__ float blurred_maximum(const scalar_t* __restrict__ m, int height, int width, const float* taps, int k,
                                 float* scratch) {
  const int radius = k / 2;
  const int bands = (height + kBand - 1) / kBand;
  float best = -INFINITY;
  for (int item = threadIdx.x; item < bands * width; item += kMapThreads) {
    const int band = item / width, col = item - band * width;
    const int r0 = band * kBand;
    const int j0 = max(0, radius - col), j1 = min(k, width + radius - col);
    float out[kBand];
#pragma unroll
    for (int s = 0; s < kBand; ++s) out[s] = 0.0f;
    const int first = max(0, r0 - radius), last = min(height, r0 + kBand + radius);
    for (int row = first; row < last; ++row) {
      const scalar_t* line = m + int64_t(row) * width;
      float h = 0.0f;
      for (int j = j0; j < j1; ++j) h += taps[j] * to_float(line[col + j - radius]);
#pragma unroll
      for (int s = 0; s < kBand; ++s) {
        const int d = row - r0 - s + radius;  // the vertical tap of this row for output row r0 + s
        if (d >= 0 && d < k) out[s] += taps[d] * h;
      }
    }
#pragma unroll
    for (int s = 0; s < kBand; ++s) {
      if (r0 + s < height) best = fmaxf(best, out[s]);
    }
  }
  return block_max(best, scratch);
}

template <typename scalar_t>
__global__ void __launch_bounds__(kMapThreads, 9) decode_kernel(const scalar_t* __restrict__ heatmaps,
                                                             float* __restrict__ coords, float* __restrict__ scores,
                                                             int height, int width, DecodeMethod method, int k,
                                                             int window) {
  __shared__ float red_score[kMapWarps];
  __shared__ int64_t red_index[kMapWarps];
  __shared__ float raw_taps[kMaxBlurKernel];
  __shared__ float taps[kMaxBlurKernel];
  __shared__ float horizontal[kHorizontalRows * kPatch];
  __shared__ float patch[kPatch * kPatch];
  const int64_t map = blockIdx.x;
  const int size = height * width;  // < 2^30: checked on the host
  const scalar_t* m = heatmaps + map * size;

  // 1. The first maximum: per thread, then over the block (the smallest index among equal values).
  float best;
  int thread_index;
  thread_first_maximum(m, size, best, thread_index);
  int64_t index = thread_index == kNone ? INT64_MAX : thread_index;
  block_best<kMapThreads>(best, index, -INFINITY, INT64_MAX, red_score, red_index, FirstMaximum{});
  if (index == INT64_MAX) {  // an all-NaN map: coords -1, score NaN
    index = 0;
    best = NAN;
  }
  const int y = static_cast<int>(index) / width, x = static_cast<int>(index) - y * width;
  const bool positive = best > 0.0f;  // the same in every thread: the branches below are block-uniform
  float ox = 0.0f, oy = 0.0f;

  if (positive && method == DecodeMethod::QUARTER) {
    if (threadIdx.x == 0 && x > 1 && x < width - 1 && y > 1 && y < height - 1) {
      const scalar_t* at = m + index;
      quarter_offset(to_float(at[0]), to_float(at[-1]), to_float(at[1]), to_float(at[-width]), to_float(at[width]),
                     &ox, &oy);
    }
  } else if (positive && method == DecodeMethod::LOCAL_MEAN) {
    // The window clipped to the map (a 2-D range: no overflow for any window).
    const int radius = window / 2;
    const int r0 = max(0, y - min(radius, y)), r1 = y + min(radius, height - 1 - y);
    const int c0 = max(0, x - min(radius, x)), c1 = x + min(radius, width - 1 - x);
    const int cols = c1 - c0 + 1, count = (r1 - r0 + 1) * cols;
    float total = 0.0f, sx = 0.0f, sy = 0.0f;
    bool finite = true;  // a non-finite value in the window leaves the integer argmax
    for (int e = threadIdx.x; e < count; e += kMapThreads) {
      const int dr = e / cols;
      const int row = r0 + dr, col = c0 + e - dr * cols;
      const float v = to_float(m[int64_t(row) * width + col]);
      finite = finite && is_finite_value(v);
      const float w = v > 0.0f ? v : 0.0f;
      total += w;
      sx += w * static_cast<float>(col - x);
      sy += w * static_cast<float>(row - y);
    }
    total = block_sum<kMapThreads>(total, red_score);
    sx = block_sum<kMapThreads>(sx, red_score);
    sy = block_sum<kMapThreads>(sy, red_score);
    if (__syncthreads_and(finite)) {
      ox = sx / total;
      oy = sy / total;
    }
  } else if (positive && (method == DecodeMethod::DARK || method == DecodeMethod::UDP)) {
    const bool dark = method == DecodeMethod::DARK;
    if (!dark || (x > 1 && x < width - 2 && y > 1 && y < height - 2)) {
      // 2. OpenCV's taps (decode.h), in shared memory: the raw taps, then their double sum in
      //    the host's order, then the normalised taps.
      if (threadIdx.x < k) raw_taps[threadIdx.x] = opencv_raw_tap(k, threadIdx.x);
      __syncthreads();
      if (threadIdx.x < k) {
        double sum = 0.0;
        for (int i = 0; i < k; ++i) sum += raw_taps[i];
        taps[threadIdx.x] = opencv_tap(raw_taps[threadIdx.x], 1.0 / sum);
      }
      __syncthreads();
      // 3. Horizontal pass: rows y-2-R .. y+2+R (zero outside the map) at five clamped columns.
      const int radius = k / 2, rows = kPatch + 2 * radius;
      for (int e = threadIdx.x; e < rows * kPatch; e += kMapThreads) {
        const int r = e / kPatch, c = e - r * kPatch;
        const int row = y - 2 - radius + r;
        const int col = clamp_index(x - 2 + c, width - 1);
        float s = 0.0f;
        if (row >= 0 && row < height) {
          const scalar_t* line = m + int64_t(row) * width;
          const int j0 = max(0, radius - col), j1 = min(k, width + radius - col);
          for (int j = j0; j < j1; ++j) s += taps[j] * to_float(line[col + j - radius]);
        }
        horizontal[e] = s;
      }
      __syncthreads();
      // 4. Vertical pass: the 5x5 patch at clamped rows.
      if (threadIdx.x < kPatch * kPatch) {
        const int i = threadIdx.x / kPatch, c = threadIdx.x - i * kPatch;
        const int first = clamp_index(y - 2 + i, height - 1) - y + 2;
        float s = 0.0f;
        for (int d = 0; d < k; ++d) s += taps[d] * horizontal[(first + d) * kPatch + c];
        patch[threadIdx.x] = s;
      }
      __syncthreads();
      // 5. The exact rescaling factor only where the floor / clip can be reached (every
      //    thread reads the same patch: a block-uniform branch).
      const bool need = dark ? dark_needs_scale(patch) : udp_needs_scale(patch, best);
      float scale = 1.0f;
      if (need) scale = best / blurred_maximum(m, height, width, taps, k, red_score);
      if (threadIdx.x == 0) {
        if (dark) {
          dark_offset_t<double>(patch, scale, x, y, height, width, &ox, &oy);  // double: see decode.h
        } else {
          udp_offset_t<double>(patch, scale, &ox, &oy);
        }
      }
    }
  }
  if (threadIdx.x == 0) {
    const bool clipped = is_refined(method);
    coords[2 * map] = !positive ? -1.0f : (clipped ? clip_to_map(x, ox, width) : static_cast<float>(x) + ox);
    coords[2 * map + 1] = !positive ? -1.0f : (clipped ? clip_to_map(y, oy, height) : static_cast<float>(y) + oy);
    scores[map] = best;
  }
}

// ---- soft-argmax --------------------------------------------------------------------------

// exp(beta d) as soft_exp(d, exp_scale(beta)): float uses exp2f with beta log2(e) folded in.
template <typename acc_t>
__device__ __forceinline__ acc_t exp_scale(acc_t beta) {
  return std::is_same_v<acc_t, float> ? beta * acc_t(1.4426950408889634) : beta;
}
// 2^x by the SFU alone (one MUFU.EX2; exp2f adds a range test and two multiplies per call for
// results below 2^-126, which only flush to 0 here: weights relative to the maximum, <= 1).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
template <typename acc_t>
__device__ __forceinline__ acc_t soft_exp(acc_t d, acc_t scale) {
  if constexpr (std::is_same_v<acc_t, float>) {
    return fast_exp2(d * scale);
  } else {
    return exp(d * scale);
  }
}

// Resident blocks per SM the forward is built for: >= 9 x 128 threads holds the 1088 maps of
// B=64, K=17 in one wave on 132 SMs (8 leave 32 maps for a second wave). float32: 10 (<= 48
// registers). 16-bit maps unpack 32 values per chunk and need 64 registers (8 blocks; at 56 they
// spill); float64 maps (gradcheck precision, off the training path) take what they need.
template <typename scalar_t>
constexpr int kSoftBlocks = std::is_same_v<scalar_t, double> ? 4 : (sizeof(scalar_t) == 2 ? 8 : 10);

// Online softmax state: max, sum of exp(beta (h - max)), and that sum weighted by x and y.
template <typename acc_t>
struct SoftState {
  acc_t m, s, sx, sy;
};

template <typename acc_t>
__device__ __forceinline__ SoftState<acc_t> soft_merge(SoftState<acc_t> a, SoftState<acc_t> b, acc_t scale) {
  if (b.s == acc_t(0)) return a;
  if (a.s == acc_t(0)) return b;
  const acc_t m = a.m > b.m ? a.m : b.m;
  const acc_t fa = soft_exp(a.m - m, scale), fb = soft_exp(b.m - m, scale);
  return {m, a.s * fa + b.s * fb, a.sx * fa + b.sx * fb, a.sy * fa + b.sy * fb};
}

// One scalar pixel (head, tail, or every pixel of a map narrower than a vector). docs/design.md:
// -inf weighs 0; NaN or +inf flags the map (its result is NaN) and stays out of the state.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void soft_scalar(const scalar_t* m, int p, int width, acc_t scale, SoftState<acc_t>& st,
                                            bool& bad) {
  const acc_t v = static_cast<acc_t>(m[p]);
  bad = bad || !(v < acc_t(INFINITY));
  if (!(v < acc_t(INFINITY)) || v == acc_t(-INFINITY)) return;
  const int row = p / width;
  const acc_t col = static_cast<acc_t>(p - row * width), r = static_cast<acc_t>(row);
  if (v > st.m) {
    const acc_t f = soft_exp(st.m - v, scale);  // 0 while the state is empty (m = -inf)
    st = {v, st.s * f + 1, st.sx * f + col, st.sy * f + r};
  } else {
    const acc_t e = soft_exp(v - st.m, scale);
    st.s += e;
    st.sx += e * col;
    st.sy += e * r;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kMapThreads, kSoftBlocks<scalar_t>) soft_argmax_kernel(const scalar_t* __restrict__ heatmaps,
                                                                  acc_t* __restrict__ coords,
                                                                  acc_t* __restrict__ scores,
                                                                  acc_t* __restrict__ log_normaliser, int height,
                                                                  int width, acc_t beta) {
  constexpr int V = kVec<scalar_t>;
  __shared__ SoftState<acc_t> partial[kMapWarps];
  const int64_t map = blockIdx.x;
  const int size = height * width;
  const scalar_t* m = heatmaps + map * size;
  const acc_t scale = exp_scale(beta);
  SoftState<acc_t> st{acc_t(-INFINITY), 0, 0, 0};
  bool bad = false;
  // Vectors need width >= V: a vector then wraps to the next row at most once.
  const MapSplit s = split_map(m, size, width >= V);
  for (int p = threadIdx.x; p < s.head; p += kMapThreads) soft_scalar(m, p, width, scale, st, bad);
  // (row, col) of this thread's next vector, advanced by kMapThreads vectors per step.
  const int step = kMapThreads * V, step_rows = step / width, step_cols = step - step_rows * width;
  const int first = s.head + static_cast<int>(threadIdx.x) * V;
  int row = first / width, col = first - row * width;
  const uint4* vectors = reinterpret_cast<const uint4*>(m + s.head);
  for (int i = threadIdx.x; i < s.vectors; i += kUnroll * kMapThreads) {
    uint4 raw[kUnroll];
    int rows[kUnroll], cols[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * kMapThreads;
      raw[u] = j < s.vectors ? __ldg(vectors + j) : minus_inf_vector<scalar_t>();
      rows[u] = row;
      cols[u] = col;
      advance(row, col, step_rows, step_cols, width);
    }
    // Two passes over the chunk, each unpacking the raw vectors again (free for float32, one
    // shift or mask per element for 16-bit types): 16 live registers instead of 32 unpacked values.
    acc_t chunk = acc_t(-INFINITY);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      acc_t v[V];
      unpack<scalar_t>(raw[u], v);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        bad = bad || !(v[e] < acc_t(INFINITY));
        chunk = fmax(chunk, v[e]);  // fmax skips NaN (flagged above)
      }
    }
    const acc_t next = fmax(st.m, chunk);
    if (next == acc_t(-INFINITY)) continue;  // only -inf (or NaN) so far: weight 0, nothing to add
    const acc_t f = soft_exp(st.m - next, scale);  // one rescale per chunk; 0 for an empty state
    st = {next, st.s * f, st.sx * f, st.sy * f};
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      acc_t v[V], w[V], total = 0, along = 0, wrapped = 0;
      unpack<scalar_t>(raw[u], v);
#pragma unroll
      for (int e = 0; e < V; ++e) {
        w[e] = soft_exp(v[e] - next, scale);  // -inf -> 0
        total += w[e];
        along += w[e] * acc_t(e);
      }
      // The vector's elements e >= wrap lie on the next row: none when W % V == 0 and the map
      // is 16-byte aligned (64x48, 96x72), so the per-element test is off the common path.
      const int wrap = width - cols[u];
      if (wrap < V) {
#pragma unroll
        for (int e = 1; e < V; ++e) wrapped += e >= wrap ? w[e] : acc_t(0);
      }
      st.s += total;
      st.sx += (static_cast<acc_t>(cols[u]) * total + along) - static_cast<acc_t>(width) * wrapped;
      st.sy += static_cast<acc_t>(rows[u]) * total + wrapped;
    }
  }
  for (int p = s.tail + threadIdx.x; p < size; p += kMapThreads) soft_scalar(m, p, width, scale, st, bad);

  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    SoftState<acc_t> other{__shfl_xor_sync(kFullMask, st.m, offset), __shfl_xor_sync(kFullMask, st.s, offset),
                           __shfl_xor_sync(kFullMask, st.sx, offset), __shfl_xor_sync(kFullMask, st.sy, offset)};
    st = soft_merge(st, other, scale);
  }
  if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = st;
  bad = __syncthreads_or(bad);  // also orders the partial states before thread 0 reads them
  if (threadIdx.x == 0) {
#pragma unroll
    for (int w = 1; w < kMapWarps; ++w) st = soft_merge(st, partial[w], scale);
    const acc_t nan = acc_t(NAN);
    coords[2 * map] = bad ? nan : st.sx / st.s;
    coords[2 * map + 1] = bad ? nan : st.sy / st.s;
    scores[map] = bad ? nan : st.m;
    log_normaliser[map] = bad ? nan : beta * st.m + log(st.s);
  }
}

// d x / d h_ij = beta p_ij (j - x), d y / d h_ij = beta p_ij (i - y), p = exp(beta h - lse):
// grad = beta p (gx j + gy i + c0), c0 = -(gx x + gy y).
template <typename acc_t>
struct BackwardMap {
  acc_t gx, gy, c0, beta, lse;
  __device__ __forceinline__ acc_t grad(acc_t h, acc_t g) const {
    if constexpr (std::is_same_v<acc_t, float>) {
      const float l2e = 1.4426950408889634f;
      return beta * fast_exp2((beta * h - lse) * l2e) * g;  // beta h - lse <= 0 up to rounding
    } else {
      return beta * exp(beta * h - lse) * g;
    }
  }
};

// The (B, K, 2) upstream gradient of the coordinates, read with its strides: the usual upstream of
// coords.sum() or .mean() is an expanded scalar (strides 0), which a contiguous copy would turn
// into a second launch per call. One 32-bit division per block finds (b, k).
template <typename acc_t>
struct CoordinateGrad {
  const acc_t* data;
  int64_t stride_b, stride_k, stride_xy;
  int K;
  __device__ __forceinline__ const acc_t* at(int map) const {
    const int b = map / K, k = map - b * K;
    return data + b * stride_b + k * stride_k;
  }
  __device__ __forceinline__ acc_t x(int map) const { return at(map)[0]; }
  __device__ __forceinline__ acc_t y(int map) const { return at(map)[stride_xy]; }
};

// Grid (maps, tiles): block (map, tile) handles kBackwardTile vectors of the map (scalars when
// `vectorise` is false: the gradient and the map are not equally aligned, or the map is
// narrower than a vector), tile 0 also the scalar head and tail.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kBackwardThreads) soft_argmax_backward_kernel(
    CoordinateGrad<acc_t> grad_coords, const scalar_t* __restrict__ heatmaps, const acc_t* __restrict__ coords,
    const acc_t* __restrict__ log_normaliser, scalar_t* __restrict__ grad, int height, int width, acc_t beta,
    bool vectorise) {
  constexpr int V = kVec<scalar_t>;
  const int64_t map = blockIdx.x;
  const int size = height * width;
  const scalar_t* m = heatmaps + map * size;
  scalar_t* out = grad + map * size;
  const acc_t gx = grad_coords.x(blockIdx.x), gy = grad_coords.y(blockIdx.x);  // once per block
  const BackwardMap<acc_t> bm{gx, gy, -(gx * coords[2 * map] + gy * coords[2 * map + 1]), beta, log_normaliser[map]};
  const MapSplit s = split_map(m, size, vectorise && width >= V);
  const int units = s.head == size ? size : s.vectors;  // what the tiles cover: scalars or vectors
  const int tiles = (units + kBackwardTile - 1) / kBackwardTile;
  // One element on its own: the whole map on the scalar path, the head and tail on the vector one.
  const auto scalar_grad = [&](int p) {
    const int row = p / width, col = p - row * width;
    const acc_t g = bm.gx * acc_t(col) + bm.gy * acc_t(row) + bm.c0;
    out[p] = static_cast<scalar_t>(bm.grad(static_cast<acc_t>(m[p]), g));
  };
  if (s.head == size) {
    for (int tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int p = tile * kBackwardTile + u * kBackwardThreads + threadIdx.x;
        if (p < size) scalar_grad(p);
      }
    }
    return;
  }
  if (blockIdx.y == 0) {  // the scalar head and tail (fewer than 2 V elements)
    const int p = threadIdx.x < s.head ? threadIdx.x : s.tail + threadIdx.x - s.head;
    if (p < size) scalar_grad(p);
  }
  const acc_t wrap_delta = bm.gy - bm.gx * acc_t(width);  // g at (row + 1, col - width) minus g at (row, col)
  const int step = kBackwardThreads * V, step_rows = step / width, step_cols = step - step_rows * width;
  const uint4* in_vectors = reinterpret_cast<const uint4*>(m + s.head);
  uint4* out_vectors = reinterpret_cast<uint4*>(out + s.head);
  for (int tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int i = tile * kBackwardTile + threadIdx.x;
    const int first = s.head + i * V;  // < 2^30 + kBackwardTile * V: no overflow
    int row = first / width, col = first - row * width;
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * kBackwardThreads;
      if (j < s.vectors) raw[u] = __ldg(in_vectors + j);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * kBackwardThreads;
      if (j < s.vectors) {
        acc_t h[V], r[V];
        unpack<scalar_t>(raw[u], h);
        const acc_t g0 = bm.gx * acc_t(col) + bm.gy * acc_t(row) + bm.c0;
        acc_t g[V];
#pragma unroll
        for (int e = 0; e < V; ++e) g[e] = bm.gx * acc_t(e) + g0;
        const int wrap = width - col;  // elements e >= wrap lie on the next row (rare: see the forward)
        if (wrap < V) {
#pragma unroll
          for (int e = 1; e < V; ++e) g[e] += e >= wrap ? wrap_delta : acc_t(0);
        }
#pragma unroll
        for (int e = 0; e < V; ++e) r[e] = bm.grad(h[e], g[e]);
        out_vectors[j] = pack<scalar_t>(r);
      }
      advance(row, col, step_rows, step_cols, width);
    }
  }
}

// ---- peaks --------------------------------------------------------------------------------

constexpr int kPeakThreads = 256;
constexpr int kPeakCapacity = 2048;
// Maps of up to this many pixels are staged in shared memory as float (30 KB; with the static
// 16.5 KB the block stays under the 48 KB that needs no opt-in).
constexpr int kStageCapacity = 7680;

// Whether pixel (row, col) of value v is a peak: >= every pixel of its window and > every
// earlier one in row-major order. `m` is the staged map (float, shared) or the global map.
template <typename T>
__device__ __forceinline__ bool is_peak_at(const T* m, int height, int width, int row, int col, int d, float v) {
  const int r0 = max(0, row - d), r1 = min(height - 1, row + d);
  const int c0 = max(0, col - d), c1 = min(width - 1, col + d);
  for (int r = r0; r <= r1; ++r) {
    const T* line = m + int64_t(r) * width;
    for (int c = c0; c <= c1; ++c) {
      const float q = to_float(line[c]);
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

// The map as float into shared memory: 16-byte loads, scalar head and tail.
template <typename scalar_t>
__device__ __forceinline__ void stage_map(const scalar_t* __restrict__ m, int size, float* stage) {
  constexpr int V = kVec<scalar_t>;
  const MapSplit s = split_map(m, size, true);
  for (int p = threadIdx.x; p < s.head; p += kPeakThreads) stage[p] = to_float(m[p]);
  const uint4* vectors = reinterpret_cast<const uint4*>(m + s.head);
  for (int i = threadIdx.x; i < s.vectors; i += kUnroll * kPeakThreads) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * kPeakThreads;
      if (j < s.vectors) raw[u] = __ldg(vectors + j);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * kPeakThreads;
      if (j < s.vectors) {
        float v[V];
        unpack<scalar_t>(raw[u], v);
#pragma unroll
        for (int e = 0; e < V; ++e) stage[s.head + j * V + e] = v[e];
      }
    }
  }
  for (int p = s.tail + threadIdx.x; p < size; p += kPeakThreads) stage[p] = to_float(m[p]);
}

// The candidates and the top-P rounds over map `m` (staged float or global scalar_t).
template <typename T>
__device__ __forceinline__ void select_peaks(const T* m, int64_t map, int height, int width, float threshold, int d,
                             int max_peaks, float* cand_score, int* cand_index, int* count, float* red_score,
                             int64_t* red_index, float* __restrict__ coords, float* __restrict__ scores,
                             bool* __restrict__ valid) {
  const int size = height * width;
  for (int p = threadIdx.x; p < size; p += kPeakThreads) {
    const float v = to_float(m[p]);
    if (v > threshold) {
      const int row = p / width;
      if (is_peak_at(m, height, width, row, p - row * width, d, v)) {
        const int slot = atomicAdd(count, 1);
        if (slot < kPeakCapacity) {
          cand_score[slot] = v;
          cand_index[slot] = p;
        }
      }
    }
  }
  __syncthreads();
  const int found = *count;
  const bool listed = found <= kPeakCapacity;  // else: rescan the map each round (rare)
  float last_score = INFINITY;
  int last_index = -1;
  for (int round = 0; round < max_peaks; ++round) {
    float best = -INFINITY;
    int best_index = INT_MAX;
    if (listed) {
      for (int e = threadIdx.x; e < found; e += kPeakThreads) {
        const float s = cand_score[e];
        const int i = cand_index[e];
        if (precedes(last_score, last_index, s, i) && precedes(s, i, best, best_index)) {
          best = s;
          best_index = i;
        }
      }
    } else {
      for (int p = threadIdx.x; p < size; p += kPeakThreads) {
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

// `staged`: the map fits kStageCapacity and the launch gave size floats of dynamic shared memory.
template <typename scalar_t>
__global__ void __launch_bounds__(kPeakThreads, 4) find_peaks_kernel(const scalar_t* __restrict__ heatmaps,
                                                                  float* __restrict__ coords,
                                                                  float* __restrict__ scores,
                                                                  bool* __restrict__ valid, int height, int width,
                                                                  float threshold, int d, int max_peaks,
                                                                  bool staged) {
  extern __shared__ float stage[];
  __shared__ float cand_score[kPeakCapacity];
  __shared__ int cand_index[kPeakCapacity];
  __shared__ int count;
  __shared__ float red_score[kPeakThreads / kWarp];
  __shared__ int64_t red_index[kPeakThreads / kWarp];
  const int64_t map = blockIdx.x;
  const int size = height * width;
  const scalar_t* m = heatmaps + map * int64_t(size);
  if (threadIdx.x == 0) count = 0;
  if (staged) stage_map(m, size, stage);
  __syncthreads();
  if (staged) {
    select_peaks(static_cast<const float*>(stage), map, height, width, threshold, d, max_peaks, cand_score,
                 cand_index, &count, red_score, red_index, coords, scores, valid);
  } else {
    select_peaks(m, map, height, width, threshold, d, max_peaks, cand_score, cand_index, &count, red_score,
                 red_index, coords, scores, valid);
  }
}

// Maps are indexed with int inside the kernels.
void check_map_size(const Tensor& heatmaps, const char* op) {
  const int64_t size = heatmaps.size(2) * heatmaps.size(3);
  STD_TORCH_CHECK(size < (int64_t(1) << 30), op, ": heatmaps must have H * W < 2^30 pixels, got ", size);
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
  check_map_size(heatmaps, "decode_heatmaps_cuda");
  // A window wider than the map is the whole map from any argmax: clamped, so that it fits an int.
  const int64_t whole_map = std::min<int64_t>(window, 2 * std::max(heatmaps.size(2), heatmaps.size(3)) + 1);
  const unsigned blocks = grid_for(maps, 1);  // one block per map; 64-bit count: never an int overflow
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES(heatmaps.scalar_type(), "decode_heatmaps_cuda", [&] {
    decode_kernel<scalar_t><<<blocks, kMapThreads, 0, stream>>>(
        heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<float>(), scores.mutable_data_ptr<float>(),
        static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)), chosen, static_cast<int>(blur_kernel),
        static_cast<int>(whole_map));
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
  check_map_size(heatmaps, "soft_argmax_cuda");
  const unsigned blocks = grid_for(maps, 1);
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(heatmaps.scalar_type(), "soft_argmax_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    soft_argmax_kernel<scalar_t, acc_t><<<blocks, kMapThreads, 0, stream>>>(
        heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<acc_t>(), scores.mutable_data_ptr<acc_t>(),
        log_normaliser.mutable_data_ptr<acc_t>(), static_cast<int>(heatmaps.size(2)),
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
  // grad_coords in place with its strides (an expanded upstream is not copied); another dtype is cast.
  const Tensor g = as_dtype(grad_coords, compute);
  const Tensor c = to_contiguous(coords, compute);
  const Tensor l = to_contiguous(log_normaliser, compute);
  Tensor grad = new_empty(heatmaps, {heatmaps.size(0), heatmaps.size(1), heatmaps.size(2), heatmaps.size(3)},
                          heatmaps.scalar_type());
  const int64_t maps = heatmaps.size(0) * heatmaps.size(1);
  if (heatmaps.numel() == 0) return grad;
  check_map_size(heatmaps, "soft_argmax_backward_cuda");
  const int height = static_cast<int>(heatmaps.size(2)), width = static_cast<int>(heatmaps.size(3));
  const int64_t size = int64_t(height) * width;
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(heatmaps.scalar_type(), "soft_argmax_backward_cuda", [&] {
    using acc_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    constexpr int V = kVec<scalar_t>;
    const scalar_t* in = heatmaps.const_data_ptr<scalar_t>();
    scalar_t* out = grad.mutable_data_ptr<scalar_t>();
    // 16-byte accesses need the map and its gradient equally aligned (a map's head and tail are
    // then the same); otherwise every element is a scalar.
    const bool vectorise = reinterpret_cast<uintptr_t>(in) % 16 == reinterpret_cast<uintptr_t>(out) % 16;
    const int64_t units = vectorise && width >= V ? (size + V - 1) / V : size;
    // the tiles loop past grid y's limit
    const int64_t tiles = std::min<int64_t>((units + kBackwardTile - 1) / kBackwardTile, kMaxGridYZ);
    const dim3 grid(grid_for(maps, 1), static_cast<unsigned>(tiles));
    const CoordinateGrad<acc_t> upstream{g.const_data_ptr<acc_t>(), g.stride(0), g.stride(1), g.stride(2),
                                         static_cast<int>(heatmaps.size(1))};
    soft_argmax_backward_kernel<scalar_t, acc_t><<<grid, kBackwardThreads, 0, stream>>>(
        upstream, in, c.const_data_ptr<acc_t>(), l.const_data_ptr<acc_t>(), out, height, width,
        static_cast<acc_t>(beta), vectorise);
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
  check_map_size(heatmaps, "find_peaks_cuda");
  STD_TORCH_CHECK(max_peaks < (int64_t(1) << 31), "find_peaks_cuda: max_peaks must be < 2^31, got ", max_peaks);
  const unsigned blocks = grid_for(maps, 1);
  const int d = static_cast<int>(std::min<int64_t>(min_distance, std::max(heatmaps.size(2), heatmaps.size(3))));
  const int64_t size = heatmaps.size(2) * heatmaps.size(3);
  const bool staged = size <= kStageCapacity;
  const size_t stage_bytes = staged ? static_cast<size_t>(size) * sizeof(float) : 0;
  const cudaStream_t stream = current_cuda_stream(heatmaps);
  KPF_DISPATCH_HEATMAP_TYPES(heatmaps.scalar_type(), "find_peaks_cuda", [&] {
    find_peaks_kernel<scalar_t><<<blocks, kPeakThreads, stage_bytes, stream>>>(
        heatmaps.const_data_ptr<scalar_t>(), coords.mutable_data_ptr<float>(), scores.mutable_data_ptr<float>(),
        valid.mutable_data_ptr<bool>(), static_cast<int>(heatmaps.size(2)), static_cast<int>(heatmaps.size(3)),
        static_cast<float>(threshold), d, static_cast<int>(max_peaks), staged);
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
