// The CPU kernels' one vector-math header: branch-free float32 exp / log1p / pow and float
// ordering keys, written so that GCC vectorises the loops that call them at -O3 without
// -ffast-math or a vector math library, plus the function-multiversioning macro.
#pragma once

#include <cstdint>
#include <cstring>

#include "kpfast/host_device.h"

namespace kpfast {

// The hot loops are compiled twice on x86-64 GCC, for AVX2+FMA (8 floats a step) and for the
// baseline ISA, and the loader picks the clone the CPU supports (an ifunc): the build itself
// stays portable (no -march flag).
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define KPF_CPU_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define KPF_CPU_CLONES
#endif

inline int32_t float_bits(float v) {
  int32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  return bits;
}

inline float bits_float(int32_t bits) {
  float v;
  std::memcpy(&v, &bits, sizeof(v));
  return v;
}

// Branch-free float32 math, accurate to a few ulp (well inside the tests' 1e-5 relative tolerance).
struct VectorMath {
  // a where condition else b, as a bit blend (no branch for the vectoriser to give up on).
  static inline float select(bool condition, float a, float b) {
    const int32_t mask = -static_cast<int32_t>(condition);
    return bits_float((float_bits(a) & mask) | (float_bits(b) & ~mask));
  }
  // exp(x) for x <= 0 (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, 2^n from bits).
  // Exactly 0 below -87 (so -inf weighs 0); NaN stays NaN.
  static inline float exp_nonpositive(float x) {
    const float xc = select(x < -87.0f, -87.0f, x);
    const float n = static_cast<float>(static_cast<int32_t>(xc * 1.44269504088896341f - 0.5f));  // round, xc <= 0
    const float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
    float poly = 1.9875691500e-4f;
    poly = poly * r + 1.3981999507e-3f;
    poly = poly * r + 8.3334519073e-3f;
    poly = poly * r + 4.1665795894e-2f;
    poly = poly * r + 1.6666665459e-1f;
    poly = poly * r + 5.0000001201e-1f;
    poly = poly * r * r + r + 1.0f;
    const float scale = bits_float((static_cast<int32_t>(n) + 127) << 23);  // n >= -126: a normal power of two
    return select(x < -87.0f, 0.0f, poly * scale);
  }
  // log(1 + e) for e in [0, 1] as 2 atanh(f), f = e / (2 + e) in [0, 1/3]: no cancellation for tiny e.
  static inline float log1p_unit(float e) { return log1p_atanh_series(e / (2.0f + e)); }
  // x^g for x >= 0 and g in {0, 1, 2, 3, 4} only (callers check the exponent first).
  static inline float pow(float x, float g) {
    const float x2 = x * x, x3 = x2 * x, x4 = x2 * x2;
    return select(g == 0.0f, 1.0f, select(g == 1.0f, x, select(g == 2.0f, x2, select(g == 3.0f, x3, x4))));
  }
};

// Monotonic integer keys of floats: signed comparisons of keys order floats as < does, and an
// integer max vectorises where a float select would not (that needs -fno-trapping-math). NaN is
// placed by the caller's rule (docs/design.md, "Non-finite pixels"):
// argmax_key puts every NaN below -inf (NaN is never the maximum); nan_max_key above +inf (one
// NaN makes the maximum NaN, as soft-argmax wants).
inline int32_t order_key(float v) {
  const int32_t bits = float_bits(v);
  return bits ^ ((bits >> 31) & 0x7fffffff);
}
inline int32_t argmax_key(float v) { return v != v ? INT32_MIN : order_key(v); }
inline int32_t nan_max_key(float v) { return v != v ? INT32_MAX : order_key(v); }
// The inverse of order_key (an involution); INT32_MAX maps to a NaN.
inline float key_value(int32_t key) { return bits_float(key ^ ((key >> 31) & 0x7fffffff)); }

}  // namespace kpfast
