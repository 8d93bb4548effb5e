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
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cuda/ops.h"
#include "kpfast/common.h"

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
  using acc_t = at::acc_type<scalar_t, /*is_cuda=*/true>;
  __shared__ acc_t partial[kThreads];
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
    acc_t sums[2] = {gx, gy};
    for (int which = 0; which < 2; ++which) {
      partial[threadIdx.x] = sums[which];
      __syncthreads();
      for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
        __syncthreads();
      }
      if (threadIdx.x == 0) {
        const int64_t idx = (b * N + target) * K + k;
        grad_keypoints[2 * idx + which] = moves_with_keypoint ? static_cast<scalar_t>(partial[0]) : scalar_t(0);
      }
      __syncthreads();
    }
  }
  partial[threadIdx.x] = gs;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) grad_sigma[map] = static_cast<scalar_t>(partial[0]);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> render_heatmaps_cuda(const at::Tensor& keypoints, const at::Tensor& weights,
                                                        const at::Tensor& sigma, int64_t height, int64_t width,
                                                        c10::string_view encoding, at::ScalarType dtype) {
  check_render_inputs(keypoints, weights, sigma);
  TORCH_CHECK(height >= 0 && width >= 0, "height and width must be >= 0, got ", height, "x", width);
  const Encoding enc = encoding_from_string(std::string(encoding));
  const c10::cuda::CUDAGuard guard(keypoints.device());
  const auto B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  auto heatmaps = at::empty({B, K, height, width}, keypoints.options().dtype(dtype));
  auto weights_out = at::zeros_like(weights);
  const int64_t maps = B * K, map_size = height * width;
  // An empty map has no pixel inside any window, so the weights stay zero.
  if (maps == 0 || map_size == 0) return {heatmaps, weights_out};
  TORCH_CHECK(maps < (int64_t(1) << 31), "render_heatmaps_cuda: B*K must be < 2^31, got ", maps);
  const int tiles = static_cast<int>(std::min<int64_t>((map_size + kThreads - 1) / kThreads, 1024));
  const dim3 grid(static_cast<unsigned>(maps), tiles);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(keypoints.scalar_type(), "render_heatmaps_cuda", [&] {
    using compute_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "render_heatmaps_cuda_out", [&] {
      render_forward_kernel<compute_t, scalar_t><<<grid, kThreads, 0, stream>>>(
          keypoints.data_ptr<compute_t>(), weights.data_ptr<compute_t>(), sigma.data_ptr<compute_t>(),
          heatmaps.data_ptr<scalar_t>(), weights_out.data_ptr<compute_t>(), N, K, static_cast<int>(height),
          static_cast<int>(width), enc);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {heatmaps, weights_out};
}

std::tuple<at::Tensor, at::Tensor> render_heatmaps_backward_cuda(const at::Tensor& grad_heatmaps,
                                                                 const at::Tensor& keypoints, const at::Tensor& weights,
                                                                 const at::Tensor& sigma, c10::string_view encoding) {
  check_render_inputs(keypoints, weights, sigma);
  const Encoding enc = encoding_from_string(std::string(encoding));
  const c10::cuda::CUDAGuard guard(keypoints.device());
  const auto B = keypoints.size(0), N = keypoints.size(1), K = keypoints.size(2);
  TORCH_CHECK(grad_heatmaps.dim() == 4 && grad_heatmaps.size(0) == B && grad_heatmaps.size(1) == K,
              "grad_heatmaps must have shape (", B, ", ", K, ", H, W), got ", grad_heatmaps.sizes());
  const auto grad = grad_heatmaps.contiguous();
  auto grad_keypoints = at::zeros_like(keypoints);
  auto grad_sigma = at::zeros_like(sigma);
  const int64_t maps = B * K;
  if (maps == 0 || grad.size(2) * grad.size(3) == 0) return {grad_keypoints, grad_sigma};
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(keypoints.scalar_type(), "render_heatmaps_backward_cuda", [&] {
    using compute_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "render_backward_cuda_grad", [&] {
      render_backward_kernel<compute_t, scalar_t><<<static_cast<unsigned>(maps), kThreads, 0, stream>>>(
          grad.data_ptr<scalar_t>(), keypoints.data_ptr<compute_t>(), weights.data_ptr<compute_t>(),
          sigma.data_ptr<compute_t>(), grad_keypoints.data_ptr<compute_t>(), grad_sigma.data_ptr<compute_t>(), N, K,
          static_cast<int>(grad.size(2)), static_cast<int>(grad.size(3)), enc);
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {grad_keypoints, grad_sigma};
}

}  // namespace kpfast
