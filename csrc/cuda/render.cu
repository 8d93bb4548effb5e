// CUDA kernels for Op 1, Gaussian heatmap rendering.
//
// Forward: a 2-D grid, x over maps (b, k), y over pixel tiles of one map. Consecutive threads
// write consecutive pixels of a row-major map, so stores are coalesced; the per-map
// window parameters are computed once per block into shared memory (N is small: the people
// of one crop, 1 for top-down). The kernel is store-bound: it writes each output byte once.
//
// Backward: one block per map; threads stride over the union of the instance windows, route
// each pixel's gradient to the first maximal instance, and reduce per-instance sums in
// shared memory. No atomics, so results are deterministic.
#include <algorithm>
#include <tuple>

#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace kpfast {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxSharedInstances = 64;  // larger N falls back to recomputing windows per pixel

template <typename scalar_t>
__device__ __forceinline__ GaussianWindow<scalar_t> load_window(const scalar_t* keypoints, const scalar_t* weights,
                                                                scalar_t s, int64_t idx, int height, int width,
                                                                Encoding encoding) {
  return gaussian_window<scalar_t>(keypoints[2 * idx], keypoints[2 * idx + 1], weights[idx], s, height, width,
                                   encoding);
}

template <typename scalar_t, typename out_t>
__global__ void render_forward_kernel(const scalar_t* __restrict__ keypoints, const scalar_t* __restrict__ weights,
                                      const scalar_t* __restrict__ sigma, out_t* __restrict__ heatmaps,
                                      scalar_t* __restrict__ weights_out, int64_t N, int64_t K, int height, int width,
                                      Encoding encoding) {
  __shared__ GaussianWindow<scalar_t> windows[kMaxSharedInstances];
  const int64_t map = blockIdx.x;
  const int64_t b = map / K, k = map % K;
  const scalar_t s = sigma[map];
  const int64_t shared_n = N < kMaxSharedInstances ? N : kMaxSharedInstances;
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const int64_t idx = (b * N + n) * K + k;
    const auto g = load_window(keypoints, weights, s, idx, height, width, encoding);
    if (n < shared_n) windows[n] = g;
    if (blockIdx.y == 0) weights_out[idx] = g.valid ? weights[idx] : scalar_t(0);
  }
  __syncthreads();
  const int64_t map_size = int64_t(height) * width;
  out_t* out = heatmaps + map * map_size;
  for (int64_t p = int64_t(blockIdx.y) * blockDim.x + threadIdx.x; p < map_size; p += int64_t(gridDim.y) * blockDim.x) {
    const int row = static_cast<int>(p / width), col = static_cast<int>(p % width);
    scalar_t value = scalar_t(0);
    for (int64_t n = 0; n < N; ++n) {
      const auto g = n < shared_n ? windows[n] : load_window(keypoints, weights, s, (b * N + n) * K + k, height, width, encoding);
      const scalar_t v = gaussian_value(g, row, col);
      value = v > value ? v : value;
    }
    out[p] = static_cast<out_t>(value);
  }
}

template <typename scalar_t, typename grad_t>
__global__ void render_backward_kernel(const grad_t* __restrict__ grad, const scalar_t* __restrict__ keypoints,
                                       const scalar_t* __restrict__ weights, const scalar_t* __restrict__ sigma,
                                       scalar_t* __restrict__ grad_keypoints, scalar_t* __restrict__ grad_sigma,
                                       int64_t N, int64_t K, int height, int width, Encoding encoding) {
  using acc_t = scalar_t;  // float sums in float on the GPU (as ATen's CUDA acc_type)
  __shared__ acc_t partial[kThreads / kWarp];
  const int64_t map = blockIdx.x;
  const int64_t b = map / K, k = map % K;
  const scalar_t s = sigma[map];
  const int64_t map_size = int64_t(height) * width;
  const grad_t* g_map = grad + map * map_size;
  const bool moves_with_keypoint = encoding != Encoding::MSRA;
  acc_t gs = acc_t(0);
  // One pass per instance keeps registers bounded for any N; N is 1 for top-down training.
  for (int64_t target = 0; target < N; ++target) {
    const auto gt = load_window(keypoints, weights, s, (b * N + target) * K + k, height, width, encoding);
    acc_t gx = acc_t(0), gy = acc_t(0);
    if (gt.valid) {
      const int win_w = gt.x1 - gt.x0 + 1;
      const int64_t win_size = int64_t(win_w) * (gt.y1 - gt.y0 + 1);
      for (int64_t p = threadIdx.x; p < win_size; p += blockDim.x) {
        const int row = gt.y0 + static_cast<int>(p / win_w), col = gt.x0 + static_cast<int>(p % win_w);
        const scalar_t v = gaussian_value(gt, row, col);
        if (!(v > scalar_t(0))) continue;
        bool owns = true;  // first maximal instance owns the pixel
        for (int64_t n = 0; n < N && owns; ++n) {
          if (n == target) continue;
          const auto g = load_window(keypoints, weights, s, (b * N + n) * K + k, height, width, encoding);
          const scalar_t other = gaussian_value(g, row, col);
          owns = n < target ? !(other >= v) : !(other > v);
        }
        if (!owns) continue;
        const acc_t upstream = static_cast<acc_t>(g_map[int64_t(row) * width + col]) * v;
        const acc_t dx = acc_t(col) - gt.cx, dy = acc_t(row) - gt.cy;
        const acc_t two_c = acc_t(2) * gt.inv_two_sigma_sq;
        gx += upstream * dx * two_c;
        gy += upstream * dy * two_c;
        gs += upstream * (dx * dx + dy * dy) * two_c / acc_t(s);
      }
    }
    // Block reductions of gx and gy for this instance.
    gx = block_sum<kThreads>(gx, partial);
    gy = block_sum<kThreads>(gy, partial);
    if (threadIdx.x == 0) {
      const int64_t idx = (b * N + target) * K + k;
      grad_keypoints[2 * idx] = moves_with_keypoint ? gx : scalar_t(0);
      grad_keypoints[2 * idx + 1] = moves_with_keypoint ? gy : scalar_t(0);
    }
  }
  gs = block_sum<kThreads>(gs, partial);
  if (threadIdx.x == 0) grad_sigma[map] = static_cast<scalar_t>(gs);
}

}  // namespace

std::tuple<Tensor, Tensor> render_heatmaps_cuda(Tensor keypoints, Tensor weights, Tensor sigma, int64_t height,
                                                int64_t width, std::string encoding, ScalarType dtype) {
  check_render_forward(keypoints, weights, sigma, height, width, dtype);
  const Encoding enc = encoding_from_string(encoding);
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  const ScalarType compute = keypoints.scalar_type();
  const CudaDeviceGuard guard(keypoints);
  Tensor heatmaps = new_empty(keypoints, {B, K, height, width}, dtype);
  const int64_t maps = B * K, map_size = height * width;
  // weights_out is written by the kernel, which does not run on empty maps: zeros then.
  Tensor weights_out = map_size == 0 ? torch::stable::new_zeros(weights, weights.sizes()) : new_empty(weights, {B, N, K}, compute);
  if (maps == 0 || map_size == 0) return {heatmaps, weights_out};
  const unsigned blocks = grid_for(maps, 1);
  const int tiles = static_cast<int>(std::min<int64_t>((map_size + kThreads - 1) / kThreads, 1024));
  const dim3 grid(blocks, tiles);
  const cudaStream_t stream = current_cuda_stream(keypoints);
  KPF_DISPATCH_FLOAT_AND_DOUBLE(compute, "render_heatmaps_cuda", [&] {
    using compute_t = scalar_t;
    KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(dtype, "render_heatmaps_cuda_out", [&] {
      render_forward_kernel<compute_t, scalar_t><<<grid, kThreads, 0, stream>>>(
          keypoints.const_data_ptr<compute_t>(), weights.const_data_ptr<compute_t>(),
          sigma.const_data_ptr<compute_t>(), heatmaps.mutable_data_ptr<scalar_t>(),
          weights_out.mutable_data_ptr<compute_t>(), N, K, static_cast<int>(height), static_cast<int>(width), enc);
    });
  });
  check_launch("render_heatmaps_cuda");
  return {heatmaps, weights_out};
}

std::tuple<Tensor, Tensor> render_heatmaps_backward_cuda(Tensor grad_heatmaps, Tensor keypoints, Tensor weights,
                                                         Tensor sigma, std::string encoding) {
  check_render_inputs(keypoints, weights, sigma);
  const Encoding enc = encoding_from_string(encoding);
  const int64_t B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  STD_TORCH_CHECK(grad_heatmaps.dim() == 4 && grad_heatmaps.size(0) == B && grad_heatmaps.size(1) == K,
                  "grad_heatmaps must have shape (", B, ", ", K, ", H, W), got ", shape_of(grad_heatmaps));
  check_same_device(grad_heatmaps, "grad_heatmaps", keypoints, "keypoints");
  const CudaDeviceGuard guard(keypoints);
  const Tensor grad = torch::stable::contiguous(grad_heatmaps);
  const int64_t maps = B * K;
  const bool empty_maps = grad.size(2) * grad.size(3) == 0;
  // The kernel writes every element of both outputs; it does not run on empty maps: zeros then.
  Tensor grad_keypoints = empty_maps ? torch::stable::new_zeros(keypoints, keypoints.sizes())
                                     : new_empty(keypoints, {B, N, K, 2}, keypoints.scalar_type());
  Tensor grad_sigma = empty_maps ? torch::stable::new_zeros(sigma, sigma.sizes())
                                 : new_empty(sigma, {B, K}, sigma.scalar_type());
  if (maps == 0 || empty_maps) return {grad_keypoints, grad_sigma};
  const unsigned blocks = grid_for(maps, 1);
  const cudaStream_t stream = current_cuda_stream(keypoints);
  KPF_DISPATCH_FLOAT_AND_DOUBLE(keypoints.scalar_type(), "render_heatmaps_backward_cuda", [&] {
    using compute_t = scalar_t;
    KPF_DISPATCH_HEATMAP_TYPES_AND_DOUBLE(grad.scalar_type(), "render_backward_cuda_grad", [&] {
      render_backward_kernel<compute_t, scalar_t><<<blocks, kThreads, 0, stream>>>(
          grad.const_data_ptr<scalar_t>(), keypoints.const_data_ptr<compute_t>(),
          weights.const_data_ptr<compute_t>(), sigma.const_data_ptr<compute_t>(),
          grad_keypoints.mutable_data_ptr<compute_t>(), grad_sigma.mutable_data_ptr<compute_t>(), N, K,
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
