// The host+device building blocks shared by the CPU and CUDA kernels, free of ATen: the
// KPF_HOST_DEVICE qualifier and the elementary-function series both back ends evaluate the same
// way (gaussian.h, loss.h, cpu/vector_math.h).
#pragma once

#if defined(__CUDACC__)
#define KPF_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define KPF_HOST_DEVICE inline
#endif

namespace kpfast {

// log(1 + e) for e in [0, 1] as 2 atanh(f), given f = e / (2 + e) in [0, 1/3]: a short odd series
// with no cancellation for tiny e. The CPU kernels (VectorMath::log1p_unit, which GCC vectorises)
// and the CUDA kernels' approximate math policy (with an approximate division for f) both call
// it, instead of libm's long log1pf.
KPF_HOST_DEVICE float log1p_atanh_series(float f) {
  const float f2 = f * f;
  float series = 1.0f / 13.0f;
  series = series * f2 + 1.0f / 11.0f;
  series = series * f2 + 1.0f / 9.0f;
  series = series * f2 + 1.0f / 7.0f;
  series = series * f2 + 1.0f / 5.0f;
  series = series * f2 + 1.0f / 3.0f;
  series = series * f2 + 1.0f;
  return 2.0f * f * series;
}

}  // namespace kpfast
