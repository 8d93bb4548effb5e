// CUDA kernels for Op 2, the fused weighted heatmap loss that renders its target on the fly.
//
// One block per map (b, k), one launch per call, built for the memory system:
// * Setup, once per map: the instances' Gaussian windows, then the separable factors of the
//   target (kpfast/gaussian.h separable_factor, the CPU kernel's rule too): a column table
//   ex[n][col] and a row table ey[n][row] per instance in shared memory, zero outside the
//   window, so a pixel's target is t = max_n ey[n][row] * ex[n][col] (one multiply and one max
//   per instance, no exponential per pixel). For cornernet, a per-row count of positives, so
//   the positive test runs only in the (at most N) rows that hold one.
// * The pass over the map: each thread takes chunks of VEC = 16 / sizeof(pred) consecutive
//   pixels of a row (4 float32, 8 bfloat16/float16) when W is a multiple of VEC: one 16-byte load
//   of pred when it is contiguous and 16-byte aligned (else VEC strided loads), one 16-byte
//   store of the gradient (always contiguous). Rows and columns advance by precomputed 32-bit
//   steps: no division in the loop. Other widths take the same pass one pixel per chunk.
// * Exponents: FIXED (focal gamma 2, cornernet alpha 2 / beta 4; kpfast/loss.h dispatch_loss,
//   the CPU kernel's policy too) compiles the powers as products; otherwise the general powf.
// * forward: reads pred once; a deterministic block reduction (no atomics) writes the map's
//   loss sum and positive count. An ignored map (weight 0) writes zeros without reading pred.
// * backward: reads pred once and writes the gradient once, scaled by the map's upstream
//   gradient; an ignored map or one with upstream 0 (dropped by OHKM) is written as zeros
//   without reading pred.
// When the tables do not fit in 47 KB of shared memory (N (H + W) beyond ~12K floats), a
// fallback kernel rebuilds every pixel's target from the keypoints (slow, but any N and size).
// No (B, K, H, W) target or weight tensor exists; the gradient is the only map-sized buffer.
#include <tuple>
#include <type_traits>

#include "cuda/common.cuh"
#include "cuda/reduce.cuh"

namespace kpfast {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarp;
// 4 resident blocks (1024 threads, 64 registers each) per SM: enough loads in flight, and a bound
// that keeps ptxas from trading registers for spills (it chose 48 registers and spilled without it).
constexpr int kMinBlocks = 4;
// Dynamic shared memory for the tables: the 48 KB a block may use without an opt-in, less 1 KB for
// the kernel's static shared memory (the reduction scratch).
constexpr int64_t kMaxTableBytes = 47 * 1024;

// The elementary functions of the GPU kernels, the short hardware forms where the argument range
// makes them accurate (the CPU tests cover the same formulas with VectorMath):
// * exp(x), x <= 0: ex2.approx.ftz(x log2(e)), one multiply and MUFU.EX2 (2 ulp + the rounding of
//   x log2(e): < 1e-5 relative down to x = -87; results below 2^-126 flush to 0, as VectorMath's),
//   instead of libm's ~8 instructions (or __expf's 3 more for denormal results);
// * 1 / u for u in [1, 3]: one MUFU.RCP (rcp.approx, ~1 ulp; no denormal or overflow in that range),
//   instead of the IEEE division's refinement and out-of-line slow path (a call whose saved
//   registers spilled);
// * log(1 + e), e in [0, 1]: the CPU kernels' series 2 atanh(e / (2 + e)) (log1p_atanh_series)
//   with that reciprocal, instead of libm's long log1pf.
__device__ __forceinline__ float reciprocal_approx(float u) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(u));
  return r;
}

__device__ __forceinline__ float exp_approx(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x * 1.44269504088896341f));
  return r;
}

struct CudaMath {
  static __device__ __forceinline__ float exp_nonpositive(float x) { return exp_approx(x); }
  static __device__ __forceinline__ float reciprocal_unit(float u) { return reciprocal_approx(u); }
  static __device__ __forceinline__ float log1p_unit(float e) {
    return log1p_atanh_series(e * reciprocal_approx(2.0f + e));
  }
  static __device__ __forceinline__ float pow(float x, float g) { return pow_nonneg(x, g); }
  static __device__ __forceinline__ float select(bool condition, float a, float b) { return condition ? a : b; }
};

struct Instance {
  GaussianWindow<float> g;
  int mu_x, mu_y;  // the positive pixel, (-1, -1) when none
  float weight;    // the render rule's output weight (0 when ignored)
};

// inv_two_sigma_sq: the map's 1 / (2 sigma^2), computed once per block. Writing it over the
// window's own makes gaussian_window's per-instance IEEE division dead code, and with it the
// division's out-of-line slow path (a call, which made ptxas spill).
__device__ __forceinline__ Instance make_instance(const float* keypoints, const float* weights, float s,
                                                  float inv_two_sigma_sq, int64_t idx, int height, int width,
                                                  Encoding encoding) {
  Instance in;
  const float x = keypoints[2 * idx], y = keypoints[2 * idx + 1], w = weight_at(weights, idx);
  in.g = gaussian_window<float>(x, y, w, s, height, width, encoding);
  in.g.inv_two_sigma_sq = in.g.valid ? inv_two_sigma_sq : 0.0f;
  in.weight = in.g.valid ? w : 0.0f;
  positive_pixel(x, y, in.g.valid, height, width, &in.mu_x, &in.mu_y);
  return in;
}

struct Geometry {
  int N, K;  // instances, keypoints (N * K * B < 2^31 is checked on the host)
  int height, width;
  int64_t stride_b, stride_k, stride_h, stride_w;  // of pred, in elements
  MapSigma<float> sigma;
};

// The (B, K) upstream gradient with any strides: after a mean or sum it is an expanded scalar
// (strides 0), read in place rather than copied by an extra launch.
struct MapValues {
  const float* data;
  int64_t stride_b, stride_k;
  __device__ __forceinline__ float at(int b, int k) const { return data[b * stride_b + k * stride_k]; }
};

// Shared-memory layout of the tables (byte offsets from the dynamic shared memory's start):
// ex (N W floats), ey (N H floats), the cornernet row counts (H ints), the instances (N).
struct TableLayout {
  int64_t ey, rows, instances, bytes;
};

__host__ __device__ inline TableLayout table_layout(int64_t N, int64_t H, int64_t W, bool cornernet) {
  TableLayout L;
  L.ey = 4 * N * W;
  L.rows = L.ey + 4 * N * H;
  L.instances = L.rows + (cornernet ? 4 * H : 0);
  L.bytes = L.instances + N * static_cast<int64_t>(sizeof(Instance));
  return L;
}

// VEC consecutive elements, aligned to their size (16 bytes for the vector paths): one load or store.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

// Everything one pass over a map reads, built once per block.
struct MapPass {
  const float* ex;        // [N][W] column factors (TABLES)
  const float* ey;        // [N][H] row factors (TABLES)
  const int* row_count;   // [H] positives per row (TABLES, cornernet)
  const Instance* inst;   // [N] (TABLES)
  const float* keypoints;  // the fallback rebuilds instances from these
  const float* weights;
  float sigma, inv_two_sigma_sq;
  int64_t first_index;  // (b N + 0) K + k: instance n is first_index + n K
  int N, K, H, W;
  Encoding encoding;
  bool vector_load;  // pred's map is contiguous and 16-byte aligned
  int64_t stride_h, stride_w;
};

// The forward's partial sums of one thread.
struct Partial {
  float total = 0.0f, count = 0.0f;
};

// One thread's share of the pass over a map: chunks of VEC pixels of one row (W % VEC == 0),
// thread t starting at chunk t and striding by kThreads chunks. TABLES: the target from the
// shared tables; otherwise rebuilt from the keypoints (VEC must be 1).
template <LossKind KIND, bool GRADIENT, bool FIXED, int VEC, bool TABLES, typename pred_t>
__device__ __forceinline__ Partial map_pass(const MapPass& M, const pred_t* __restrict__ p_map,
                                            pred_t* __restrict__ g_map, float scale, const LossParams& P) {
  static_assert(TABLES || VEC == 1, "the fallback pass takes one pixel per chunk");
  Partial acc;
  const int per_row = M.W / VEC;  // chunks per row
  int row = threadIdx.x / per_row, chunk = threadIdx.x - row * per_row;
  const int step_rows = kThreads / per_row, step_chunks = kThreads - step_rows * per_row;
  while (row < M.H) {
    const int col = chunk * VEC;
    float x[VEC];
    bool vector_load = false;
    if constexpr (VEC > 1) vector_load = M.vector_load;
    if (vector_load) {
      const Pack<pred_t, VEC> v = *reinterpret_cast<const Pack<pred_t, VEC>*>(p_map + row * M.W + col);
#pragma unroll
      for (int i = 0; i < VEC; ++i) x[i] = static_cast<float>(v.v[i]);
    } else {
      const pred_t* p_row = p_map + row * M.stride_h;
#pragma unroll
      for (int i = 0; i < VEC; ++i) x[i] = static_cast<float>(p_row[(col + i) * M.stride_w]);
    }
    float t[VEC];
    bool positive[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      t[i] = 0.0f;
      positive[i] = false;
    }
    if constexpr (TABLES) {
      // Not unrolled: N is usually 1, and an unrolled copy would only grow the loop's code.
#pragma unroll 1
      for (int n = 0; n < M.N; ++n) {
        const float fy = M.ey[n * M.H + row];
        const float* fx = M.ex + n * M.W + col;
        if constexpr (VEC % 4 == 0) {
#pragma unroll
          for (int q = 0; q < VEC; q += 4) {
            const float4 f = *reinterpret_cast<const float4*>(fx + q);
            t[q] = fmaxf(t[q], fy * f.x);
            t[q + 1] = fmaxf(t[q + 1], fy * f.y);
            t[q + 2] = fmaxf(t[q + 2], fy * f.z);
            t[q + 3] = fmaxf(t[q + 3], fy * f.w);
          }
        } else {
#pragma unroll
          for (int i = 0; i < VEC; ++i) t[i] = fmaxf(t[i], fy * fx[i]);
        }
      }
      // Only the rows that hold a positive test pixels against the instances' positives.
      if (KIND == LossKind::CORNERNET && M.row_count[row] != 0) {
#pragma unroll 1
        for (int n = 0; n < M.N; ++n) {
          if (M.inst[n].mu_y != row) continue;
          const int mx = M.inst[n].mu_x;
#pragma unroll
          for (int i = 0; i < VEC; ++i) positive[i] = positive[i] || mx == col + i;
        }
#pragma unroll
        for (int i = 0; i < VEC; ++i) acc.count += positive[i] ? 1.0f : 0.0f;
      }
    } else {
#pragma unroll 1
      for (int n = 0; n < M.N; ++n) {
        const Instance in = make_instance(M.keypoints, M.weights, M.sigma, M.inv_two_sigma_sq,
                                          M.first_index + int64_t(n) * M.K, M.H, M.W, M.encoding);
        t[0] = fmaxf(t[0], gaussian_value(in.g, row, col));
        positive[0] = positive[0] || (in.mu_x == col && in.mu_y == row);
      }
      if (KIND == LossKind::CORNERNET) acc.count += positive[0] ? 1.0f : 0.0f;
    }
    float value[VEC];
#pragma unroll
    for (int i = 0; i < VEC; ++i) {
      value[i] = pixel_weight(t[i], P) * pixel_loss<KIND, GRADIENT, CudaMath, FIXED>(x[i], t[i], positive[i], P);
    }
    if constexpr (GRADIENT) {
      Pack<pred_t, VEC> out;
#pragma unroll
      for (int i = 0; i < VEC; ++i) out.v[i] = static_cast<pred_t>(scale * value[i]);
      *reinterpret_cast<Pack<pred_t, VEC>*>(g_map + row * M.W + col) = out;
    } else {
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc.total += value[i];
    }
    chunk += step_chunks;
    row += step_rows;
    if (chunk >= per_row) {
      chunk -= per_row;
      ++row;
    }
  }
  return acc;
}

// TABLES: the tabulated pass (every usual workload); otherwise the fallback pass, a kernel of its
// own so that its per-pixel window rebuild does not weigh on the registers of the tabulated one.
template <LossKind KIND, bool GRADIENT, bool FIXED, bool TABLES, typename pred_t>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    heatmap_loss_kernel(const pred_t* __restrict__ pred, const float* __restrict__ keypoints,
                        const float* __restrict__ weights, MapValues upstream,
                        float* __restrict__ map_losses, float* __restrict__ positives, pred_t* __restrict__ grad,
                        Geometry G, Encoding encoding, LossParams P, bool vector_load) {
  constexpr bool tables = TABLES;
  constexpr int VEC = 16 / sizeof(pred_t);
  extern __shared__ float4 dynamic_shared[];
  __shared__ float scratch[2][kWarps];
  __shared__ float warp_weights[kWarps];
  char* base = reinterpret_cast<char*>(dynamic_shared);
  const int map = blockIdx.x;
  const int b = map / G.K, k = map - b * G.K;
  const int H = G.height, W = G.width, N = G.N;
  const TableLayout L = table_layout(N, H, W, KIND == LossKind::CORNERNET);

  MapPass M;
  M.ex = reinterpret_cast<const float*>(base);
  M.ey = reinterpret_cast<const float*>(base + L.ey);
  M.row_count = reinterpret_cast<const int*>(base + L.rows);
  M.inst = reinterpret_cast<const Instance*>(base + L.instances);
  M.keypoints = keypoints;
  M.weights = weights;
  M.sigma = G.sigma.at(b, k);
  // 1 / (2 sigma^2) to 2 ulp (a relative change < 1e-6 in the target) without the IEEE division's
  // out-of-line slow path (a call, around which ptxas spilled).
  M.inv_two_sigma_sq = __fdividef(1.0f, 2.0f * M.sigma * M.sigma);
  M.first_index = int64_t(b) * N * G.K + k;
  M.N = N;
  M.K = G.K;
  M.H = H;
  M.W = W;
  M.encoding = encoding;
  M.vector_load = vector_load;
  M.stride_h = G.stride_h;
  M.stride_w = G.stride_w;

  // The instances (into shared memory with the tables) and the map weight (max over instances).
  float weight = 0.0f;
  for (int n = threadIdx.x; n < N; n += kThreads) {
    const Instance in = make_instance(keypoints, weights, M.sigma, M.inv_two_sigma_sq,
                                      M.first_index + int64_t(n) * G.K, H, W, encoding);
    if (tables) reinterpret_cast<Instance*>(base + L.instances)[n] = in;
    weight = fmaxf(weight, in.weight);
  }
  weight = warp_max(weight);
  if (threadIdx.x % kWarp == 0) warp_weights[threadIdx.x / kWarp] = weight;
  __syncthreads();
  float map_weight = 0.0f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) map_weight = fmaxf(map_weight, warp_weights[w]);

  const int map_size = H * W;  // < 2^31, checked on the host
  const pred_t* p_map = pred + b * G.stride_b + k * G.stride_k;
  pred_t* g_map = GRADIENT ? grad + int64_t(map) * map_size : nullptr;
  const float up = GRADIENT ? upstream.at(b, k) : 0.0f;
  // A map that is ignored (weight 0: no positive either) or, backward, dropped (upstream 0): zeros.
  if (map_weight == 0.0f || (GRADIENT && up == 0.0f)) {
    if (GRADIENT) {
      if (W % VEC == 0) {
        Pack<pred_t, VEC> zeros;
#pragma unroll
        for (int i = 0; i < VEC; ++i) zeros.v[i] = pred_t(0.0f);
        for (int c = threadIdx.x; c < map_size / VEC; c += kThreads) {
          reinterpret_cast<Pack<pred_t, VEC>*>(g_map)[c] = zeros;
        }
      } else {
        for (int p = threadIdx.x; p < map_size; p += kThreads) g_map[p] = pred_t(0.0f);
      }
    } else if (threadIdx.x == 0) {
      map_losses[map] = 0.0f;
      positives[map] = 0.0f;
    }
    return;
  }

  if constexpr (TABLES) {
    float* ex = reinterpret_cast<float*>(base);
    float* ey = reinterpret_cast<float*>(base + L.ey);
    const Instance* inst = M.inst;
    for (int i = threadIdx.x; i < N * W; i += kThreads) {  // setup only: one division per entry
      const int n = i / W, col = i - n * W;
      const GaussianWindow<float>& g = inst[n].g;
      ex[i] = separable_factor(col, g.cx, g.x0, g.x1, g.inv_two_sigma_sq);
    }
    for (int i = threadIdx.x; i < N * H; i += kThreads) {
      const int n = i / H, row = i - n * H;
      const GaussianWindow<float>& g = inst[n].g;
      ey[i] = separable_factor(row, g.cy, g.y0, g.y1, g.inv_two_sigma_sq);
    }
    if (KIND == LossKind::CORNERNET) {
      int* row_count = reinterpret_cast<int*>(base + L.rows);
      for (int row = threadIdx.x; row < H; row += kThreads) {
        int count = 0;
        for (int n = 0; n < N; ++n) count += inst[n].mu_y == row ? 1 : 0;
        row_count[row] = count;
      }
    }
    __syncthreads();
  }

  const float scale = up * map_weight;
  Partial acc;
  if constexpr (TABLES) {
    if (W % VEC == 0) {
      acc = map_pass<KIND, GRADIENT, FIXED, VEC, true>(M, p_map, g_map, scale, P);
    } else {
      acc = map_pass<KIND, GRADIENT, FIXED, 1, true>(M, p_map, g_map, scale, P);
    }
  } else {
    acc = map_pass<KIND, GRADIENT, FIXED, 1, false>(M, p_map, g_map, scale, P);
  }
  if (!GRADIENT) {
    const float total = block_sum<kThreads>(acc.total, scratch[0]);
    const float count = block_sum<kThreads>(acc.count, scratch[1]);
    if (threadIdx.x == 0) {
      map_losses[map] = total * map_weight;
      positives[map] = count;
    }
  }
}

template <bool GRADIENT>
void launch(const Tensor& pred, const Tensor& keypoints, const OptionalTensor& weights, const OptionalTensor& sigma,
            double sigma_value, MapValues upstream, float* map_losses, float* positives, Tensor* grad,
            LossKind kind, Encoding encoding, const LossParams& P) {
  const int64_t B = pred.size(0), K = pred.size(1), H = pred.size(2), W = pred.size(3), N = keypoints.size(1);
  STD_TORCH_CHECK(H * W < (int64_t(1) << 31), "heatmap_loss_cuda: H*W must be < 2^31, got ", H, "x", W);
  STD_TORCH_CHECK(B * N * K < (int64_t(1) << 31), "heatmap_loss_cuda: B*N*K must be < 2^31, got ", B, "*", N, "*", K);
  const unsigned blocks = grid_for(B * K, 1);
  const Geometry G{static_cast<int>(N),       static_cast<int>(K),  static_cast<int>(H),
                   static_cast<int>(W),       pred.stride(0),       pred.stride(1),
                   pred.stride(2),            pred.stride(3),       map_sigma<float>(sigma, sigma_value)};
  const TableLayout L = table_layout(N, H, W, kind == LossKind::CORNERNET);
  const bool tables = L.bytes <= kMaxTableBytes;
  const size_t shared_bytes = tables ? static_cast<size_t>(L.bytes) : 0;
  const cudaStream_t stream = current_cuda_stream(pred);
  KPF_DISPATCH_HEATMAP_TYPES(pred.scalar_type(), "heatmap_loss_cuda", [&] {
    // 16-byte loads of pred: each map's rows contiguous and every map start 16-byte aligned.
    const bool vector_load = pred.stride(3) == 1 && pred.stride(2) == W &&
                             (pred.stride(0) * int64_t(sizeof(scalar_t))) % 16 == 0 &&
                             (pred.stride(1) * int64_t(sizeof(scalar_t))) % 16 == 0 &&
                             reinterpret_cast<uintptr_t>(pred.const_data_ptr<scalar_t>()) % 16 == 0;
    scalar_t* grad_ptr = GRADIENT ? grad->mutable_data_ptr<scalar_t>() : nullptr;
    dispatch_loss(kind, P, [&](auto kind_tag, auto fixed_tag) {
      constexpr LossKind KIND = decltype(kind_tag)::value;
      constexpr bool FIXED = decltype(fixed_tag)::value;
      const auto kernel = tables ? heatmap_loss_kernel<KIND, GRADIENT, FIXED, true, scalar_t>
                                 : heatmap_loss_kernel<KIND, GRADIENT, FIXED, false, scalar_t>;
      kernel<<<blocks, kThreads, shared_bytes, stream>>>(
          pred.const_data_ptr<scalar_t>(), keypoints.const_data_ptr<float>(), weights_data<float>(weights), upstream,
          map_losses, positives, grad_ptr, G, encoding, P, vector_load);
    });
  });
  check_launch(GRADIENT ? "heatmap_loss_backward_cuda" : "heatmap_loss_cuda");
}

}  // namespace

std::tuple<Tensor, Tensor> heatmap_loss_cuda(Tensor pred, Tensor keypoints, OptionalTensor weights,
                                             OptionalTensor sigma, double sigma_value, std::string encoding,
                                             std::string kind, double alpha, double gamma, double beta,
                                             double keypoint_weight, double background_weight, double threshold,
                                             double l1_weight) {
  const LossCall call = loss_call(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                                  keypoint_weight, background_weight, threshold, l1_weight);
  const Encoding enc = call.encoding;
  const LossKind loss_kind = call.kind;
  const LossParams& P = call.params;
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
  launch<false>(pred, keypoints, weights, sigma, sigma_value, MapValues{nullptr, 0, 0},
                map_losses.mutable_data_ptr<float>(), positives.mutable_data_ptr<float>(), nullptr, loss_kind, enc, P);
  return {map_losses, positives};
}

Tensor heatmap_loss_backward_cuda(Tensor grad_map_losses, Tensor pred, Tensor keypoints, OptionalTensor weights,
                                  OptionalTensor sigma, double sigma_value, std::string encoding, std::string kind,
                                  double alpha, double gamma, double beta, double keypoint_weight,
                                  double background_weight, double threshold, double l1_weight) {
  const LossCall call = loss_call(pred, keypoints, weights, sigma, sigma_value, encoding, kind, alpha, gamma, beta,
                                  keypoint_weight, background_weight, threshold, l1_weight);
  const Encoding enc = call.encoding;
  const LossKind loss_kind = call.kind;
  const LossParams& P = call.params;
  check_loss_upstream(grad_map_losses, pred);
  const CudaDeviceGuard guard(pred);
  // float32 (B, K) with any strides (the usual expanded scalar is read in place); another dtype is
  // converted first.
  const Tensor upstream = as_dtype(grad_map_losses, ScalarType::Float);
  Tensor grad = new_empty(pred, {pred.size(0), pred.size(1), pred.size(2), pred.size(3)}, pred.scalar_type());
  if (grad.numel() == 0) return grad;
  const MapValues upstream_values{upstream.const_data_ptr<float>(), upstream.stride(0), upstream.stride(1)};
  launch<true>(pred, keypoints, weights, sigma, sigma_value, upstream_values, nullptr, nullptr, &grad, loss_kind, enc,
               P);
  return grad;
}

STABLE_TORCH_LIBRARY_IMPL(kpfast, CUDA, m) {
  m.impl("heatmap_loss", TORCH_BOX(&heatmap_loss_cuda));
  m.impl("_heatmap_loss_backward", TORCH_BOX(&heatmap_loss_backward_cuda));
}

}  // namespace kpfast
