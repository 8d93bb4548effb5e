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
// Forward tiles: about kTilePixels pixels per block (4 stores of 16 bytes per thread in fp32),
// at most kMaxTileCols columns; factors of at most kMaxChunk instances, kFactorBytes per block,
// in shared memory at a time (a tile of a top-down 64x48 or 96x72 map holds N <= 36 at once).
constexpr int kTilePixels = 4096;
constexpr int kMaxTileCols = 1024;
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

template <typename scalar_t>
__device__ __forceinline__ GaussianWindow<scalar_t> load_window(const scalar_t* keypoints, const scalar_t* weights,
                                                                scalar_t s, int64_t idx, int height, int width,
                                                                Encoding encoding) {
  return gaussian_window<scalar_t>(keypoints[2 * idx], keypoints[2 * idx + 1], weight_at(weights, idx), s, height,
                                   width, encoding);
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

// heatmaps (B, K, H, W) contiguous; a block renders rows [r0, r0 + tile_rows) x columns
// [c0, c0 + tile_cols) of map blockIdx.x. VEC > 1 requires width % VEC == 0 and tile_cols % VEC == 0
// (so every vector starts 16-byte aligned). Dynamic shared memory: chunk * (tile_cols + tile_rows)
// factors.
template <typename scalar_t, typename out_t, int VEC>
__global__ void __launch_bounds__(kThreads)
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
  const int cols_v = cols / VEC;  // exact: cols is a multiple of VEC
  const bool writes_weights = blockIdx.y == 0 && blockIdx.z == 0;  // one block per map writes weights_out
  const scalar_t s = sigma.at(b, k);
  out_t* const tile = heatmaps + int64_t(map) * height * width + int64_t(r0) * width + c0;
  // Thread t handles vectors t, t + kThreads, ... of the tile in row-major order: a fixed step of
  // (step_rows, step_cols) vectors, so the loop advances (row, column) without dividing.
  const int step_rows = kThreads / cols_v, step_cols = kThreads % cols_v;
  const int step_offset = step_rows * width + step_cols * VEC;
  const int passes = N > 0 ? (N + chunk - 1) / chunk : 1;

  for (int pass = 0; pass < passes; ++pass) {
    const int first = pass * chunk;
    const int count = min(chunk, N - first);  // 0 when N == 0: the maps are zero
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
    for (int n = 0; n < count; ++n) {
      for (int e = threadIdx.x; e < cols + rows; e += kThreads) {
        if (e < cols) {
          ex[n * tile_cols + e] = gaussian_col_factor(windows[n], c0 + e);
        } else {
          ey[n * tile_rows + (e - cols)] = gaussian_row_factor(windows[n], r0 + e - cols);
        }
      }
    }
    __syncthreads();

    int row = int(threadIdx.x) / cols_v, col_v = int(threadIdx.x) % cols_v;
    int offset = row * width + col_v * VEC;  // within the map: H * W < 2^31
    while (row < rows) {
      scalar_t value[VEC];
      if (pass == 0) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) value[j] = scalar_t(0);
      } else {  // max-merge into the pixels the earlier chunks stored
        const Pack<out_t, VEC> stored = *reinterpret_cast<const Pack<out_t, VEC>*>(tile + offset);
#pragma unroll
        for (int j = 0; j < VEC; ++j) value[j] = static_cast<scalar_t>(stored.v[j]);
      }
      for (int n = 0; n < count; ++n) {
        const scalar_t fy = ey[n * tile_rows + row];
        scalar_t fx[VEC];
        load_factors<scalar_t, VEC>(ex + n * tile_cols + col_v * VEC, fx);
#pragma unroll
        for (int j = 0; j < VEC; ++j) value[j] = max(value[j], fy * fx[j]);
      }
      Pack<out_t, VEC> packed;
#pragma unroll
      for (int j = 0; j < VEC; ++j) packed.v[j] = static_cast<out_t>(value[j]);
      *reinterpret_cast<Pack<out_t, VEC>*>(tile + offset) = packed;

      row += step_rows;
      col_v += step_cols;
      offset += step_offset;
      if (col_v >= cols_v) {  // wrapped past the tile's last vector of a row
        col_v -= cols_v;
        row += 1;
        offset += width - cols;
      }
    }
  }
}

template <typename scalar_t, typename grad_t>
__global__ void __launch_bounds__(kThreads)
    render_backward_kernel(const grad_t* __restrict__ grad, const scalar_t* __restrict__ keypoints,
                           const scalar_t* __restrict__ weights, MapSigma<scalar_t> sigma,
                           scalar_t* __restrict__ grad_keypoints, scalar_t* __restrict__ grad_sigma, int N, int K,
                           int height, int width, Encoding encoding) {
  using acc_t = scalar_t;  // float sums in float on the GPU (as ATen's CUDA acc_type)
  __shared__ acc_t partial[kThreads / kWarp];
  __shared__ GaussianWindow<scalar_t> windows[kMaxSharedInstances];
  const int map = blockIdx.x;
  const int b = map / K, k = map % K;
  const scalar_t s = sigma.at(b, k);
  const grad_t* g_map = grad + int64_t(map) * height * width;
  const bool moves_with_keypoint = encoding != Encoding::MSRA;
  const int shared_n = min(N, kMaxSharedInstances);
  for (int n = threadIdx.x; n < shared_n; n += kThreads) {
    windows[n] = load_window(keypoints, weights, s, (int64_t(b) * N + n) * K + k, height, width, encoding);
  }
  __syncthreads();
  acc_t gs = acc_t(0);
  // One pass per instance keeps registers bounded for any N; N is 1 for top-down training.
  for (int target = 0; target < N; ++target) {
    const int64_t t_idx = (int64_t(b) * N + target) * K + k;
    const auto gt = target < shared_n ? windows[target] : load_window(keypoints, weights, s, t_idx, height, width, encoding);
    acc_t gx = acc_t(0), gy = acc_t(0);
    if (gt.valid) {
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
                           : gaussian_value(load_window(keypoints, weights, s, (int64_t(b) * N + n) * K + k, height,
                                                        width, encoding),
                                            row, col);
          owns = n < target ? !(other >= v) : !(other > v);
        }
        if (owns) {
          const acc_t upstream = static_cast<acc_t>(g_map[row * width + col]) * v;
          const acc_t dx = acc_t(col) - gt.cx, dy = acc_t(row) - gt.cy;
          const acc_t two_c = acc_t(2) * gt.inv_two_sigma_sq;
          gx += upstream * dx * two_c;
          gy += upstream * dy * two_c;
          gs += upstream * (dx * dx + dy * dy) * two_c / acc_t(s);
        }
        r += step_r;
        c += step_c;
        if (c >= win_w) {
          c -= win_w;
          r += 1;
        }
      }
    }
    // Block reductions of gx and gy for this instance.
    gx = block_sum<kThreads>(gx, partial);
    gy = block_sum<kThreads>(gy, partial);
    if (threadIdx.x == 0) {
      grad_keypoints[2 * t_idx] = moves_with_keypoint ? gx : scalar_t(0);
      grad_keypoints[2 * t_idx + 1] = moves_with_keypoint ? gy : scalar_t(0);
    }
  }
  gs = block_sum<kThreads>(gs, partial);
  if (threadIdx.x == 0) grad_sigma[map] = static_cast<scalar_t>(gs);
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
  p.tile_rows = static_cast<int>(std::min<int64_t>(height, (kTilePixels + p.tile_cols - 1) / p.tile_cols));
  const int row_tiles = (height + p.tile_rows - 1) / p.tile_rows;
  p.tile_rows = (height + row_tiles - 1) / row_tiles;  // balanced: 96 rows as 2 x 48, not 57 + 39
  const int64_t per_instance = int64_t(p.tile_cols + p.tile_rows) * factor_bytes;
  const int64_t fits = std::max<int64_t>(1, kFactorBytes / per_instance);
  p.chunk = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({N, int64_t(kMaxChunk), fits})));
  // At most (1024 + 4) or (1 + 4096) factors per instance: <= 40 KB for one float64 instance,
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
    const dim3 grid(grid_for(B * K, 1), static_cast<unsigned>((height + p.tile_rows - 1) / p.tile_rows),
                    static_cast<unsigned>((width + p.tile_cols - 1) / p.tile_cols));
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
  Tensor heatmaps = new_empty(keypoints, {B, K, height, width}, dtype);
  const int64_t maps = B * K, map_size = height * width;
  // weights_out is written by the kernel, which does not run on empty maps: zeros then (every
  // window is off an empty map).
  Tensor weights_out = map_size == 0 ? torch::stable::new_zeros(keypoints, {B, N, K}, compute)
                                     : new_empty(keypoints, {B, N, K}, compute);
  if (maps == 0 || map_size == 0) return {heatmaps, weights_out};
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
  const Tensor grad = torch::stable::contiguous(grad_heatmaps);
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
          grad.const_data_ptr<scalar_t>(), keypoints.const_data_ptr<compute_t>(), weights_data<compute_t>(weights),
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
