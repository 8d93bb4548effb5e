// CUDA kernels for Op 2, the fused weighted heatmap loss that renders its target on the fly.
//
// One block per map (b, k): the instances' Gaussian windows are built once into shared memory,
// then the threads stride over the map's pixels, rebuild the target of each pixel in registers
// and apply the pixel formula of kpfast/loss.h. Consecutive threads read consecutive pixels of
// a row-major map (coalesced for contiguous pred; any strides work).
//   forward:  reads pred once; a block reduction (no atomics: deterministic) writes the map's
//             loss sum and positive count.
//   backward: reads pred once and writes the gradient once, scaled by the map's upstream
//             gradient; a map that is ignored (weight 0) or dropped (upstream 0, e.g. by OHKM)
//             is written as zeros without reading pred.
// No (B, K, H, W) target or weight tensor exists; the gradient is the only map-sized buffer.
#include <tuple>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace kpfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxSharedInstances = 64;  // larger N recomputes the windows per pixel

struct Instance {
  GaussianWindow<float> g;
  int mu_x, mu_y;  // the positive pixel, (-1, -1) when none
  float weight;    // the render rule's output weight (0 when ignored)
};

__device__ __forceinline__ Instance make_instance(const float* keypoints, const float* weights, float s, int64_t idx,
                                                  int height, int width, Encoding encoding) {
  Instance in;
  const float x = keypoints[2 * idx], y = keypoints[2 * idx + 1], w = weights[idx];
  in.g = gaussian_window<float>(x, y, w, s, height, width, encoding);
  in.weight = in.g.valid ? w : 0.0f;
  positive_pixel(x, y, in.g.valid, height, width, &in.mu_x, &in.mu_y);
  return in;
}

struct Geometry {
  int64_t N, K;
  int height, width;
  int64_t stride_b, stride_k, stride_h, stride_w;
};

template <LossKind KIND, bool GRADIENT, typename pred_t>
__global__ void __launch_bounds__(kThreads)
    heatmap_loss_kernel(const pred_t* __restrict__ pred, const float* __restrict__ keypoints,
                        const float* __restrict__ weights, const float* __restrict__ sigma,
                        const float* __restrict__ upstream, float* __restrict__ map_losses,
                        float* __restrict__ positives, pred_t* __restrict__ grad, Geometry G, Encoding encoding,
                        LossParams P) {
  __shared__ Instance instances[kMaxSharedInstances];
  __shared__ float scratch[2][kWarps];
  const int64_t map = blockIdx.x;
  const int64_t b = map / G.K, k = map % G.K;
  const float s = sigma[map];
  const int64_t shared_n = G.N < kMaxSharedInstances ? G.N : kMaxSharedInstances;
  for (int64_t n = threadIdx.x; n < shared_n; n += blockDim.x) {
    instances[n] = make_instance(keypoints, weights, s, (b * G.N + n) * G.K + k, G.height, G.width, encoding);
  }
  __syncthreads();
  auto instance = [&](int64_t n) {
    return n < shared_n ? instances[n]
                        : make_instance(keypoints, weights, s, (b * G.N + n) * G.K + k, G.height, G.width, encoding);
  };
  float map_weight = 0.0f;
  for (int64_t n = 0; n < G.N; ++n) map_weight = fmaxf(map_weight, instance(n).weight);

  const int64_t map_size = int64_t(G.height) * G.width;
  const pred_t* p_map = pred + b * G.stride_b + k * G.stride_k;
  if (GRADIENT) {
    const float up = upstream[map];
    const float scale = up * map_weight;
    pred_t* g_map = grad + map * map_size;
    if (map_weight == 0.0f || up == 0.0f) {
      for (int64_t p = threadIdx.x; p < map_size; p += blockDim.x) g_map[p] = pred_t(0.0f);
      return;
    }
    for (int64_t p = threadIdx.x; p < map_size; p += blockDim.x) {
      const int row = static_cast<int>(p / G.width), col = static_cast<int>(p % G.width);
      float t = 0.0f;
      bool positive = false;
      for (int64_t n = 0; n < G.N; ++n) {
        const Instance in = instance(n);
        t = fmaxf(t, gaussian_value(in.g, row, col));
        positive = positive || (in.mu_x == col && in.mu_y == row);
      }
      const float x = static_cast<float>(p_map[row * G.stride_h + col * G.stride_w]);
      g_map[p] = static_cast<pred_t>(scale * pixel_weight(t, P) * pixel_loss<KIND, true>(x, t, positive, P));
    }
  } else {
    float total = 0.0f, count = 0.0f;
    for (int64_t p = threadIdx.x; p < map_size; p += blockDim.x) {
      const int row = static_cast<int>(p / G.width), col = static_cast<int>(p % G.width);
      float t = 0.0f;
      bool positive = false;
      for (int64_t n = 0; n < G.N; ++n) {
        const Instance in = instance(n);
        t = fmaxf(t, gaussian_value(in.g, row, col));
        positive = positive || (in.mu_x == col && in.mu_y == row);
      }
      count += positive ? 1.0f : 0.0f;
      if (map_weight > 0.0f) {  // an ignored map contributes exactly 0, whatever pred holds
        const float x = static_cast<float>(p_map[row * G.stride_h + col * G.stride_w]);
        total += pixel_weight(t, P) * pixel_loss<KIND, false>(x, t, positive, P);
      }
    }
    total = block_sum<kThreads>(total, scratch[0]);
    count = block_sum<kThreads>(count, scratch[1]);
    if (threadIdx.x == 0) {
      map_losses[map] = total * map_weight;
      positives[map] = count;
    }
  }
}

Geometry geometry(const Tensor& pred, const Tensor& keypoints) {
  return Geometry{keypoints.size(1),  keypoints.size(2), static_cast<int>(pred.size(2)), static_cast<int>(pred.size(3)),
                  pred.stride(0),     pred.stride(1),    pred.stride(2),                 pred.stride(3)};
}

template <bool GRADIENT>
void launch(const Tensor& pred, const Tensor& keypoints, const Tensor& weights, const Tensor& sigma,
            const float* upstream, float* map_losses, float* positives, Tensor* grad, LossKind kind,
            Encoding encoding, const LossParams& P) {
  const int64_t maps = pred.size(0) * pred.size(1);
  STD_TORCH_CHECK(pred.size(2) * pred.size(3) < (int64_t(1) << 31), "heatmap_loss_cuda: H*W must be < 2^31");
  const unsigned blocks = grid_for(maps, 1);
  const Geometry G = geometry(pred, keypoints);
  const cudaStream_t stream = current_cuda_stream(pred);
  KPF_DISPATCH_HEATMAP_TYPES(pred.scalar_type(), "heatmap_loss_cuda", [&] {
    scalar_t* grad_ptr = GRADIENT ? grad->mutable_data_ptr<scalar_t>() : nullptr;
    auto run = [&](auto kind_tag) {
      heatmap_loss_kernel<decltype(kind_tag)::value, GRADIENT, scalar_t><<<blocks, kThreads, 0, stream>>>(
          pred.const_data_ptr<scalar_t>(), keypoints.const_data_ptr<float>(), weights.const_data_ptr<float>(),
          sigma.const_data_ptr<float>(), upstream, map_losses, positives, grad_ptr, G, encoding, P);
    };
    switch (kind) {
      case LossKind::MSE: run(std::integral_constant<LossKind, LossKind::MSE>{}); break;
      case LossKind::FOCAL: run(std::integral_constant<LossKind, LossKind::FOCAL>{}); break;
      case LossKind::CORNERNET: run(std::integral_constant<LossKind, LossKind::CORNERNET>{}); break;
    }
  });
  check_launch(GRADIENT ? "heatmap_loss_backward_cuda" : "heatmap_loss_cuda");
}

}  // namespace

std::tuple<Tensor, Tensor> heatmap_loss_cuda(Tensor pred, Tensor keypoints, Tensor weights, Tensor sigma,
                                             std::string encoding, std::string kind, double alpha, double gamma,
                                             double beta, double keypoint_weight, double background_weight,
                                             double threshold, double l1_weight) {
  check_loss_inputs(pred, keypoints, weights, sigma);
  const Encoding enc = encoding_from_string(encoding);
  const LossKind loss_kind = loss_kind_from_string(kind);
  const LossParams P = make_loss_params(alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight);
  const CudaDeviceGuard guard(pred);
  const int64_t B = pred.size(0), K = pred.size(1);
  if (pred.numel() == 0) {  // the kernel does not run: the sums are zeros
    const std::vector<int64_t> shape{B, K};
    const torch::headeronly::IntHeaderOnlyArrayRef sizes(shape.data(), shape.size());
    return {torch::stable::new_zeros(keypoints, sizes, ScalarType::Float),
            torch::stable::new_zeros(keypoints, sizes, ScalarType::Float)};
  }
  // Every map's two values are written by thread 0 of its block.
  Tensor map_losses = new_empty(keypoints, {B, K}, ScalarType::Float);
  Tensor positives = new_empty(keypoints, {B, K}, ScalarType::Float);
  launch<false>(pred, keypoints, weights, sigma, nullptr, map_losses.mutable_data_ptr<float>(),
                positives.mutable_data_ptr<float>(), nullptr, loss_kind, enc, P);
  return {map_losses, positives};
}

Tensor heatmap_loss_backward_cuda(Tensor grad_map_losses, Tensor pred, Tensor keypoints, Tensor weights, Tensor sigma,
                                  std::string encoding, std::string kind, double alpha, double gamma, double beta,
                                  double keypoint_weight, double background_weight, double threshold,
                                  double l1_weight) {
  check_loss_inputs(pred, keypoints, weights, sigma);
  const Encoding enc = encoding_from_string(encoding);
  const LossKind loss_kind = loss_kind_from_string(kind);
  const LossParams P = make_loss_params(alpha, gamma, beta, keypoint_weight, background_weight, threshold, l1_weight);
  STD_TORCH_CHECK(has_shape(grad_map_losses, {pred.size(0), pred.size(1)}), "grad_map_losses must have shape (",
                  pred.size(0), ", ", pred.size(1), "), got ", shape_of(grad_map_losses));
  check_same_device(grad_map_losses, "grad_map_losses", pred, "pred");
  const CudaDeviceGuard guard(pred);
  const Tensor upstream = to_contiguous(grad_map_losses, ScalarType::Float);
  Tensor grad = new_empty(pred, {pred.size(0), pred.size(1), pred.size(2), pred.size(3)}, pred.scalar_type());
  if (grad.numel() == 0) return grad;
  launch<true>(pred, keypoints, weights, sigma, upstream.const_data_ptr<float>(), nullptr, nullptr, &grad, loss_kind,
               enc, P);
  return grad;
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CUDA, m) {
  m.impl("heatmap_loss", TORCH_BOX(&heatmap_loss_cuda));
  m.impl("_heatmap_loss_backward", TORCH_BOX(&heatmap_loss_backward_cuda));
}

}  // namespace kpfast
