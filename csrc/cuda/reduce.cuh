// The CUDA kernels' one reduction header: butterfly warp shuffles (every lane ends with the
// result) and block reductions built from them (one partial per warp in shared memory).
#pragma once

#include <cfloat>
#include <climits>

namespace kpfast {

constexpr int kWarp = 32;
constexpr unsigned kFullMask = 0xffffffffu;

// op(a, b) over the 32 lanes of a warp; every lane gets the result.
template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};

// fmaxf: a NaN loses against any number (used where NaN must not win).
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename T>
__device__ __forceinline__ T warp_sum(T v) { return warp_reduce(v, SumOp{}); }
__device__ __forceinline__ float warp_max(float v) { return warp_reduce(v, MaxOp{}); }

// A (value, index) pair reduced by `precedes(a, a_index, b, b_index)` (true: a wins); the
// identity is (identity_value, identity_index). Every lane gets the winner.
template <typename Precedes>
__device__ __forceinline__ void warp_best(float& value, int64_t& index, Precedes precedes) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1) {
    const float other = __shfl_xor_sync(kFullMask, value, offset);
    const int64_t other_index = __shfl_xor_sync(kFullMask, index, offset);
    if (precedes(other, other_index, value, index)) {
      value = other;
      index = other_index;
    }
  }
}

// Sum over a block of kThreads threads (a multiple of 32); `scratch` holds kThreads / 32 values.
// Every thread gets the result. Contains __syncthreads: call from every thread of the block.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  constexpr int kWarps = kThreads / kWarp;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < kWarps ? scratch[lane] : T(0);
  v = warp_sum(v);
  __syncthreads();  // scratch may be reused right after
  return v;
}

// The (value, index) winner over a block of kThreads threads; `scores` / `indices` hold
// kThreads / 32 entries. Every thread gets the winner. Contains __syncthreads.
template <int kThreads, typename Precedes>
__device__ __forceinline__ void block_best(float& value, int64_t& index, float identity_value,
                                           int64_t identity_index, float* scores, int64_t* indices,
                                           Precedes precedes) {
  constexpr int kWarps = kThreads / kWarp;
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  warp_best(value, index, precedes);
  if (lane == 0) {
    scores[warp] = value;
    indices[warp] = index;
  }
  __syncthreads();
  value = lane < kWarps ? scores[lane] : identity_value;
  index = lane < kWarps ? indices[lane] : identity_index;
  warp_best(value, index, precedes);
  __syncthreads();
}

}  // namespace kpfast
