// CUDA kernels for Op 1, Gaussian heatmap rendering.
//
// Forward: store-bound (it writes each output byte once), so it is built around the stores.
// A block renders one tile of one map (x: map (b, k), y: row tile, z: column tile). It first
// computes, per instance, the Gaussian's column factors exp(-(col - cx)^2 c) and row factors
// exp(-(row - cy)^2 c) of its tile into shared memory (zero outside the window, H + W
// exponentials per instance instead of H * W); a pixel is then the max over instances of
// ex[col] * ey[row] (the separable rule of kpfast/gaussian.h that the CPU kernel uses too). Each
// thread writes VEC consecutive pixels of a row with one 16-byte store (4 fp32, 8 fp16/bf16,
// 2 fp64) when the row width allows it, else one pixel per store (VEC = 1). Threads walk the
// tile with a fixed (row, column) step, so the store loop has no division. When a tile's
// factors of all N instances do not fit in shared memory, the instances are taken in chunks:
// later chunks max-merge into the stored pixels (exact: rounding to the output dtype is monotonic).
// Absent weights and a float sigma arrive as a null pointer and a value (one launch per call).
//
// Backward: one block per map; threads walk each instance's window (fixed step, no division),
// route each pixel's gradient to the first maximal instance, and reduce per-instance sums in
// shared memory. No atomics, so results are deterministic.
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace kpfast {
namespace {

constexpr int kThreads = 256;
// Forward tiles: about kTileBytes of output per block (4 stores of 16 bytes per thread: 4096
// fp32, 8192 fp16/bf16, 2048 fp64 pixels), enough stores to amortise the block's setup latency; at
// most kMaxTileCols columns; factors of at most kMaxChunk instances, kFactorBytes per block, in
// shared memory at a time (a tile of a top-down 64x48 map holds N <= 32 at once).
constexpr int kTileBytes = 16 * 1024;
constexpr int kMaxTileCols = 1024;
constexpr int kMaxTileRows = 4096;  // bounds one instance's factors (narrow maps): see plan_forward
constexpr int kMaxChunk = 32;
constexpr int kFactorBytes = 16 * 1024;
// Backward: windows of the first kMaxSharedInstances instances in shared memory; later ones are
// recomputed from the inputs where needed.
constexpr int kMaxSharedInstances = 64;

// VEC values of type T that move as whole 16-byte words.
template <typename T, int M>
struct alignas(sizeof(T) * M) Pack {
  T v[M];
};

// One instance's window, with the map's 1 / (2 sigma^2) precomputed: no division where it is called
// in a loop.
template <typename scalar_t>
__device__ __forceinline__ GaussianWindow<scalar_t> load_window(const scalar_t* keypoints, const scalar_t* weights,
                                                                scalar_t s, scalar_t inv_two_sigma_sq, int64_t idx,
                                                                int height, int width, Encoding encoding) {
  return gaussian_window_scaled<scalar_t>(keypoints[2 * idx], keypoints[2 * idx + 1], weight_at(weights, idx), s,
                                          inv_two_sigma_sq, height, width, encoding);
}

// VEC consecutive factors from shared memory, as 16-byte loads when VEC fills whole words (the
// caller's offsets are then multiples of VEC, so the address is 16-byte aligned).
template <typename T, int VEC>
__device__ __forceinline__ void load_factors(const T* from, T (&to)[VEC]) {
  constexpr int kPerWord = 16 / sizeof(T);
  if constexpr (VEC >= kPerWord && VEC % kPerWord == 0) {
#pragma unroll
    for (int q = 0; q < VEC / kPerWord; ++q) {
      const Pack<T, kPerWord> word = reinterpret_cast<const Pack<T, kPerWord>*>(from)[q];
#pragma unroll
      for (int j = 0; j < kPerWord; ++j) to[q * kPerWord + j] = word.v[j];
    }
  } else {
#pragma unroll
    for (int j = 0; j < VEC; ++j) to[j] = from[j];
  }
}

// The store loop of one tile (rows x cols pixels at `tile`, rows `width` apart): thread t writes
// the VEC-pixel vectors t, t + kThreads, ... in row-major order, each pixel the max over `count`
// instances of ey[n][row] * ex[n][col]. The fixed step of kThreads vectors is (step_rows,
// step_cols), so (row, column) advance without a division. kMerge: max with the stored pixels (a
// later chunk of instances); else the first instance's product is the start value (products are
// >= 0 and never NaN, so max(0, p) = p).
template <bool kMerge, typename scalar_t, typename out_t, int VEC>
__device__ __forceinline__ void store_tile(out_t* tile, const scalar_t* ex, const scalar_t* ey, int count,
                                           int rows, int cols, int width, int tile_rows, int tile_cols) {
  const int cols_v = cols / VEC;  // exact: cols is a multiple of VEC
  const int step_rows = kThreads / cols_v, step_cols = kThreads % cols_v;
  const int step_offset = step_rows * width + step_cols * VEC;
  const int wrap_offset = width - cols;  // from one row's end to the next row's start, minus a row
  int row = int(threadIdx.x) / cols_v, col_v = int(threadIdx.x) % cols_v;
  out_t* p = tile + (row * width + col_v * VEC);  // within the map: H * W < 2^31
  while (row < rows) {
    const scalar_t* fy = ey + row;
    const scalar_t* fx = ex + col_v * VEC;
    scalar_t value[VEC];
    int n = 0;
    if constexpr (kMerge) {
      const Pack<out_t, VEC> stored = *reinterpret_cast<const Pack<out_t, VEC>*>(p);
#pragma unroll
      for (int j = 0; j < VEC; ++j) value[j] = static_cast<scalar_t>(stored.v[j]);
    } else {
      scalar_t f[VEC];
      load_factors<scalar_t, VEC>(fx, f);
      const scalar_t y = fy[0];
#pragma unroll
      for (int j = 0; j < VEC; ++j) value[j] = y * f[j];
      n = 1;
    }
#pragma unroll 1  // N is small (1 for top-down); unrolling only raises register pressure
    for (; n < count; ++n) {
      scalar_t f[VEC];
      load_factors<scalar_t, VEC>(fx + n * tile_cols, f);
      const scalar_t y = fy[n * tile_rows];
#pragma unroll
      for (int j = 0; j < VEC; ++j) value[j] = max(value[j], y * f[j]);
    }
    Pack<out_t, VEC> packed;
#pragma unroll
    for (int j = 0; j < VEC; ++j) packed.v[j] = static_cast<out_t>(value[j]);
    *reinterpret_cast<Pack<out_t, VEC>*>(p) = packed;

    row += step_rows;
    col_v += step_cols;
    p += step_offset;
    if (col_v >= cols_v) {  // wrapped past the tile's last vector of a row
      col_v -= cols_v;
      row += 1;
      p += wrap_offset;
    }
  }
}

// Resident blocks per SM the forward is compiled for (a register cap of 65536 / (256 * blocks)).
// A block's life is mostly its setup latency (keypoint loads, factors, barriers) before a short
// burst of stores, so the more blocks overlap, the closer the stores come to the bandwidth: 8 (the
// 2048-thread maximum, 32 registers) for the main float32 path, fewer where more values per
// thread need the registers (checked spill-free with tools/ptxas_report.sh).
template <typename scalar_t, int VEC>
constexpr int forward_min_blocks() {
  if (sizeof(scalar_t) == 4) return VEC == 4 ? 8 : 6;
  return VEC == 8 ? 3 : 4;
}

// heatmaps (B, K, H, W) contiguous; a block renders rows [r0, r0 + tile_rows) x columns
// [c0, c0 + tile_cols) of map blockIdx.x. VEC > 1 requires width % VEC == 0 and tile_cols % VEC == 0
// (so every vector starts 16-byte aligned). Dynamic shared memory: chunk * (tile_cols + tile_rows)
// factors.
template <typename scalar_t, typename out_t, int VEC>
__global__ void __launch_bounds__(kThreads, forward_min_blocks<scalar_t, VEC>())
    render_forward_kernel(const scalar_t* __restrict__ keypoints, const scalar_t* __restrict__ weights,
                          MapSigma<scalar_t> sigma, out_t* __restrict__ heatmaps, scalar_t* __restrict__ weights_out,
                          int N, int K, int height, int width, int tile_rows, int tile_cols, int chunk,
                          Encoding encoding) {
  extern __shared__ __align__(16) unsigned char factor_memory[];
  __shared__ GaussianWindow<scalar_t> windows[kMaxChunk];
  scalar_t* ex = reinterpret_cast<scalar_t*>(factor_memory);  // [chunk][tile_cols]
  scalar_t* ey = ex + chunk * tile_cols;                       // [chunk][tile_rows]

  const int map = blockIdx.x;
  const int b = map / K, k = map % K;
  const int r0 = blockIdx.y * tile_rows, c0 = blockIdx.z * tile_cols;
  const int rows = min(tile_rows, height - r0), cols = min(tile_cols, width - c0);
  const bool writes_weights = blockIdx.y == 0 && blockIdx.z == 0;  // one block per map writes weights_out
  const scalar_t s = sigma.at(b, k);
  out_t* const tile = heatmaps + int64_t(map) * height * width + int64_t(r0) * width + c0;
  const int passes = (N + chunk - 1) / chunk;  // N >= 1 (the host renders N == 0 as zeros)

  for (int pass = 0; pass < passes; ++pass) {
    const int first = pass * chunk;
    const int count = min(chunk, N - first);
    if (pass > 0) __syncthreads();             // every thread is done with the previous chunk's factors
    if (int(threadIdx.x) < count) {
      const int64_t idx = (int64_t(b) * N + first + threadIdx.x) * K + k;
      const scalar_t w = weight_at(weights, idx);
      const auto g = gaussian_window<scalar_t>(keypoints[2 * idx], keypoints[2 * idx + 1], w, s, height, width,
                                               encoding);
      windows[threadIdx.x] = g;
      if (writes_weights) weights_out[idx] = g.valid ? w : scalar_t(0);
    }
    __syncthreads();
#pragma unroll 1
    for (int n = 0; n < count; ++n) {
#pragma unroll 1
      for (int e = threadIdx.x; e < cols + rows; e += kThreads) {
        if (e < cols) {
          ex[n * tile_cols + e] = gaussian_col_factor(windows[n], c0 + e);
        } else {
          ey[n * tile_rows + (e - cols)] = gaussian_row_factor(windows[n], r0 + e - cols);
        }
      }
    }
    __syncthreads();

    if (pass == 0) {
      store_tile<false, scalar_t, out_t, VEC>(tile, ex, ey, count, rows, cols, width, tile_rows, tile_cols);
    } else {
      store_tile<true, scalar_t, out_t, VEC>(tile, ex, ey, count, rows, cols, width, tile_rows, tile_cols);
    }
  }
}

template <typename scalar_t, typename grad_t>
__global__ void __launch_bounds__(kThreads)
    render_backward_kernel(StridedMaps<grad_t> grad, const scalar_t* __restrict__ keypoints,
                           const scalar_t* __restrict__ weights, MapSigma<scalar_t> sigma,
                           scalar_t* __restrict__ grad_keypoints, scalar_t* __restrict__ grad_sigma, int N, int K,
                           int height, int width, Encoding encoding) {
  using acc_t = scalar_t;  // float sums in float on the GPU (as ATen's CUDA acc_type)
  __shared__ acc_t partial[kThreads / kWarp];
  __shared__ GaussianWindow<scalar_t> windows[kMaxSharedInstances];
  const int map = blockIdx.x;
  const int b = map / K, k = map % K;
  const scalar_t s = sigma.at(b, k);
  const scalar_t inv_two_sigma_sq = scalar_t(1) / (scalar_t(2) * s * s);
  const grad_t* g_map = grad.map(b, k);  // any strides: an expanded upstream is read in place
  const bool moves_with_keypoint = encoding != Encoding::MSRA;
  const int shared_n = min(N, kMaxSharedInstances);
  for (int n = threadIdx.x; n < shared_n; n += kThreads) {
    windows[n] = load_window(keypoints, weights, s, inv_two_sigma_sq, (int64_t(b) * N + n) * K + k, height, width,
                             encoding);
  }
  __syncthreads();
  // Sums of upstream * (dx, dy, dx^2 + dy^2) over the owned pixels; the constant factors
  // 1 / sigma^2 (and 1 / sigma for sigma) are applied once after the reductions, so the pixel loop
  // has no division. Every valid window of a map has the same sigma, so any one gives them.
  acc_t sd = acc_t(0);
  acc_t two_c = acc_t(0);  // 1 / sigma^2 of the map's valid windows; stays 0 when there is none
  // One pass per instance keeps registers bounded for any N; N is 1 for top-down training.
  for (int target = 0; target < N; ++target) {
    const int64_t t_idx = (int64_t(b) * N + target) * K + k;
    const auto gt = target < shared_n
                        ? windows[target]
                        : load_window(keypoints, weights, s, inv_two_sigma_sq, t_idx, height, width, encoding);
    acc_t sx = acc_t(0), sy = acc_t(0);
    if (gt.valid) {  // uniform over the block
      two_c = acc_t(2) * gt.inv_two_sigma_sq;
      // Walk the window's pixels t, t + kThreads, ... with a fixed (row, column) step: no division.
      const int win_w = gt.x1 - gt.x0 + 1, win_h = gt.y1 - gt.y0 + 1;
      const int step_r = kThreads / win_w, step_c = kThreads % win_w;
      int r = int(threadIdx.x) / win_w, c = int(threadIdx.x) % win_w;
      while (r < win_h) {
        const int row = gt.y0 + r, col = gt.x0 + c;
        const scalar_t v = gaussian_value(gt, row, col);
        bool owns = v > scalar_t(0);  // and the first maximal instance owns the pixel
        for (int n = 0; n < N && owns; ++n) {
          if (n == target) continue;
          const scalar_t other =
              n < shared_n ? gaussian_value(windows[n], row, col)
                           : gaussian_value(load_window(keypoints, weights, s, inv_two_sigma_sq,
                                                        (int64_t(b) * N + n) * K + k, height, width, encoding),
                                            row, col);
          owns = n < target ? !(other >= v) : !(other > v);
        }
        if (owns) {
          const acc_t upstream = static_cast<acc_t>(grad.at(g_map, row, col)) * v;
          const acc_t dx = acc_t(col) - gt.cx, dy = acc_t(row) - gt.cy;
          sx += upstream * dx;
          sy += upstream * dy;
          sd += upstream * (dx * dx + dy * dy);
        }
        r += step_r;
        c += step_c;
        if (c >= win_w) {
          c -= win_w;
          r += 1;
        }
      }
    }
    // Block reductions of this instance's sums.
    sx = block_sum<kThreads>(sx, partial);
    sy = block_sum<kThreads>(sy, partial);
    if (threadIdx.x == 0) {  // an invalid target owns no pixel: sx = sy = 0, and two_c is finite
      grad_keypoints[2 * t_idx] = moves_with_keypoint ? sx * two_c : scalar_t(0);
      grad_keypoints[2 * t_idx + 1] = moves_with_keypoint ? sy * two_c : scalar_t(0);
    }
  }
  sd = block_sum<kThreads>(sd, partial);
  // d/dsigma exp(-d^2 / 2 sigma^2) = value * d^2 / sigma^3; no valid window: 0 (also for a sigma
  // that is 0 or not finite, whose windows are all invalid).
  if (threadIdx.x == 0) grad_sigma[map] = two_c > acc_t(0) ? static_cast<scalar_t>(sd * two_c / acc_t(s)) : scalar_t(0);
}

// The forward's tiling of an H x W map for output elements of `out_bytes` and factors of
// `factor_bytes` (see the kernel): a vector width, a tile shape and the instances per chunk.
struct ForwardPlan {
  int vec, tile_rows, tile_cols, chunk;
  size_t shared_bytes;
};

ForwardPlan plan_forward(int64_t N, int height, int width, int out_bytes, int factor_bytes, const void* out) {
  ForwardPlan p;
  const int per_word = 16 / out_bytes;
  // 16-byte stores need every row to start on a 16-byte boundary: W a multiple of the vector and
  // an aligned output (a fresh allocation always is).
  const bool aligned = reinterpret_cast<uintptr_t>(out) % 16 == 0;
  p.vec = (aligned && width % per_word == 0) ? per_word : 1;
  p.tile_cols = std::min(width, kMaxTileCols);  // kMaxTileCols is a multiple of every vector width
  const int tile_pixels = kTileBytes / out_bytes;
  p.tile_rows = static_cast<int>(
      std::min<int64_t>({height, (tile_pixels + p.tile_cols - 1) / p.tile_cols, int64_t(kMaxTileRows)}));
  const int row_tiles = (height + p.tile_rows - 1) / p.tile_rows;
  p.tile_rows = (height + row_tiles - 1) / row_tiles;  // balanced: 96 rows as 2 x 48, not 57 + 39
  const int64_t per_instance = int64_t(p.tile_cols + p.tile_rows) * factor_bytes;
  const int64_t fits = std::max<int64_t>(1, kFactorBytes / per_instance);
  p.chunk = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({N, int64_t(kMaxChunk), fits})));
  // At most (1024 + 16) or (1 + 4096) factors per instance: <= 40 KB for one float64 instance,
  // below the 48 KB every device allows without opting in.
  p.shared_bytes = static_cast<size_t>(p.chunk * per_instance);
  return p;
}

template <typename compute_t, typename out_t>
void launch_render_forward(const Tensor& keypoints, const OptionalTensor& weights, const OptionalTensor& sigma,
                           double sigma_value, Tensor& heatmaps, Tensor& weights_out, int64_t B, int64_t N, int64_t K,
                           int height, int width, Encoding encoding, cudaStream_t stream) {
  if constexpr (sizeof(out_t) > sizeof(compute_t)) {
    STD_TORCH_CHECK(false, "render_heatmaps_cuda: float64 maps need float64 keypoints");  // rejected before
  } else {
    out_t* out = heatmaps.mutable_data_ptr<out_t>();
    const ForwardPlan p = plan_forward(N, height, width, sizeof(out_t), sizeof(compute_t), out);
    // Row and column tiles on grid y and z, whose limit is 65535 (within it for every map side
    // kpfast accepts, <= 32768, but checked: a launch past it fails with an opaque error).
    const dim3 grid(grid_for(B * K, 1), grid_for(height, p.tile_rows, kMaxGridYZ),
                    grid_for(width, p.tile_cols, kMaxGridYZ));
    constexpr int kVec = 16 / sizeof(out_t);
    const auto launch = [&](auto vec) {
      render_forward_kernel<compute_t, out_t, decltype(vec)::value><<<grid, kThreads, p.shared_bytes, stream>>>(
          keypoints.const_data_ptr<compute_t>(), weights_data<compute_t>(weights),
          map_sigma<compute_t>(sigma, sigma_value), out, weights_out.mutable_data_ptr<compute_t>(),
          static_cast<int>(N), static_cast<int>(K), height, width, p.tile_rows, p.tile_cols, p.chunk, encoding);
    };
    if (p.vec == kVec) {
      launch(std::integral_constant<int, kVec>{});
    } else {
      launch(std::integral_constant<int, 1>{});
    }
  }
}

}  // namespace

std::tuple<Tensor, Tensor> render_heatmaps_cuda(Tensor keypoints, OptionalTensor weights, OptionalTensor sigma,
                                                double sigma_value, int64_t height, int64_t width,
                                                std::string encoding, ScalarType dtype) {
  check_render_forward(keypoints, weights, sigma, sigma_value, height, width, dtype);
  const Encoding enc = encoding_from_string(encoding);
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  const ScalarType compute = keypoints.scalar_type();
  STD_TORCH_CHECK(B * K < (int64_t(1) << 31) && N * K < (int64_t(1) << 31) && N < (int64_t(1) << 31),
                  "render_heatmaps_cuda: B * K and N * K must be < 2^31, got B=", B, ", N=", N, ", K=", K);
  STD_TORCH_CHECK(height * width < (int64_t(1) << 31), "render_heatmaps_cuda: H * W must be < 2^31, got ", height,
                  "x", width);
  const CudaDeviceGuard guard(keypoints);
  const int64_t maps = B * K, map_size = height * width;
  // No instance (N == 0): zero maps and no weights, no kernel. Empty maps: no kernel, and every
  // window is off the map, so every weight is 0.
  Tensor heatmaps = N == 0 ? torch::stable::new_zeros(keypoints, {B, K, height, width}, dtype)
                           : new_empty(keypoints, {B, K, height, width}, dtype);
  Tensor weights_out = map_size == 0 ? torch::stable::new_zeros(keypoints, {B, N, K}, compute)
                                     : new_empty(keypoints, {B, N, K}, compute);
  if (maps == 0 || map_size == 0 || N == 0) return {heatmaps, weights_out};
  const cudaStream_t stream = current_cuda_stream(keypoints);
  KPF_DISPATCH_FLOAT_AND_DOUBLE(compute, "render_heatmaps_cuda", [&] {
    using compute_t = scalar_t;
    KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(dtype, "render_heatmaps_cuda_out", [&] {
      launch_render_forward<compute_t, scalar_t>(keypoints, weights, sigma, sigma_value, heatmaps, weights_out, B, N,
                                                 K, static_cast<int>(height), static_cast<int>(width), enc, stream);
    });
  });
  check_launch("render_heatmaps_cuda");
  return {heatmaps, weights_out};
}

std::tuple<Tensor, Tensor> render_heatmaps_backward_cuda(Tensor grad_heatmaps, Tensor keypoints, OptionalTensor weights,
                                                         OptionalTensor sigma, double sigma_value,
                                                         std::string encoding) {
  check_keypoint_inputs(keypoints, weights, sigma, sigma_value);
  const Encoding enc = encoding_from_string(encoding);
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  STD_TORCH_CHECK(grad_heatmaps.dim() == 4 && grad_heatmaps.size(0) == B && grad_heatmaps.size(1) == K,
                  "grad_heatmaps must have shape (", B, ", ", K, ", H, W), got ", shape_of(grad_heatmaps));
  check_same_device(grad_heatmaps, "grad_heatmaps", keypoints, "keypoints");
  STD_TORCH_CHECK(B * K < (int64_t(1) << 31) && N * K < (int64_t(1) << 31) && N < (int64_t(1) << 31),
                  "_render_heatmaps_backward: B * K and N * K must be < 2^31, got B=", B, ", N=", N, ", K=", K);
  STD_TORCH_CHECK(grad_heatmaps.size(2) * grad_heatmaps.size(3) < (int64_t(1) << 31),
                  "_render_heatmaps_backward: H * W must be < 2^31, got ", shape_of(grad_heatmaps));
  const CudaDeviceGuard guard(keypoints);
  const Tensor& grad = grad_heatmaps;  // read with its strides (StridedMaps): no copy, one launch
  const int64_t maps = B * K;
  const bool empty_maps = grad.size(2) * grad.size(3) == 0;
  const ScalarType compute = keypoints.scalar_type();
  // The kernel writes every element of both outputs; it does not run on empty maps: zeros then.
  // grad_sigma is (B, K) contiguous whatever sigma's form (None, expanded (K,), strided).
  Tensor grad_keypoints = empty_maps ? torch::stable::new_zeros(keypoints, {B, N, K, 2}, compute)
                                     : new_empty(keypoints, {B, N, K, 2}, compute);
  Tensor grad_sigma = empty_maps ? torch::stable::new_zeros(keypoints, {B, K}, compute)
                                 : new_empty(keypoints, {B, K}, compute);
  if (maps == 0 || empty_maps) return {grad_keypoints, grad_sigma};
  const unsigned blocks = grid_for(maps, 1);
  const cudaStream_t stream = current_cuda_stream(keypoints);
  KPF_DISPATCH_FLOAT_AND_DOUBLE(compute, "render_heatmaps_backward_cuda", [&] {
    using compute_t = scalar_t;
    KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(grad.scalar_type(), "render_backward_cuda_grad", [&] {
      render_backward_kernel<compute_t, scalar_t><<<blocks, kThreads, 0, stream>>>(
          strided_maps<scalar_t>(grad), keypoints.const_data_ptr<compute_t>(), weights_data<compute_t>(weights),
          map_sigma<compute_t>(sigma, sigma_value), grad_keypoints.mutable_data_ptr<compute_t>(),
          grad_sigma.mutable_data_ptr<compute_t>(), static_cast<int>(N), static_cast<int>(K),
          static_cast<int>(grad.size(2)), static_cast<int>(grad.size(3)), enc);
    });
  });
  check_launch("render_heatmaps_backward_cuda");
  return {grad_keypoints, grad_sigma};
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CUDA, m) {
  m.impl("render_heatmaps", TORCH_BOX(&render_heatmaps_cuda));
  m.impl("_render_heatmaps_backward", TORCH_BOX(&render_heatmaps_backward_cuda));
}

}  // namespace kpfast
