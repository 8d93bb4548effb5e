// The per-pixel formulas of the fused heatmap loss (docs/design.md, Op 2), host+device, shared by
// the CPU and CUDA kernels; kpfast/reference/loss.py is the PyTorch statement of the same
// formulas and kpfast/triton/loss.py the Triton one. Math is float32 throughout.
#pragma once

#include <cmath>
#include <type_traits>

#include "kpfast/gaussian.h"

namespace kpfast {

enum class LossKind : int { MSE = 0, FOCAL = 1, CORNERNET = 2 };

struct LossParams {
  float alpha, gamma, beta;                              // focal / cornernet exponents and balance
  float keypoint_weight, background_weight, threshold;  // the pixel weighting
  float l1_weight;                                      // weight of |p - t|
};

// x^g for x >= 0, with 0^0 = 1 and cheap paths for the usual exponents.
KPF_HOST_DEVICE float pow_nonneg(float x, float g) {
  if (g == 2.0f) return x * x;
  if (g == 4.0f) {
    const float x2 = x * x;
    return x2 * x2;
  }
  if (g == 1.0f) return x;
  if (x > 0.0f) return powf(x, g);
  return g == 0.0f ? 1.0f : 0.0f;
}

// The elementary functions of the formulas, as a policy. The CUDA kernels use libm
// (PreciseMath); the CPU kernels use branch-free polynomials GCC can vectorise (cpu/loss.cpp).
// Every data-dependent choice goes through Math::select (a bit blend on the CPU: GCC will not
// if-convert a ternary whose operands it sank into branches, under the default -ftrapping-math).
struct PreciseMath {
  static KPF_HOST_DEVICE float exp_nonpositive(float x) { return expf(x); }
  static KPF_HOST_DEVICE float log1p_unit(float e) { return log1pf(e); }  // e in [0, 1]
  static KPF_HOST_DEVICE float pow(float x, float g) { return pow_nonneg(x, g); }
  static KPF_HOST_DEVICE float select(bool condition, float a, float b) { return condition ? a : b; }
};

template <typename Math>
KPF_HOST_DEVICE float max_of(float a, float b) {
  return Math::select(a > b, a, b);
}

template <typename Math>
KPF_HOST_DEVICE float sign_of(float v) {
  return Math::select(v > 0.0f, 1.0f, Math::select(v < 0.0f, -1.0f, 0.0f));
}

// Everything a logit kind needs from z, computed from one exp and one log1p so that nothing
// overflows for any finite z: p = sigmoid(z), q = 1 - p = sigmoid(-z),
// softplus(z) = -log(1 - p) and softplus(-z) = -log p.
struct LogitParts {
  float p, q, softplus_pos, softplus_neg;
};

// 1 / u for u in [1, 3]: Math::reciprocal_unit when the policy has one (the CUDA kernels' single
// approximate reciprocal instruction), else the exact division.
template <typename Math>
KPF_HOST_DEVICE auto reciprocal_unit(float u, int) -> decltype(Math::reciprocal_unit(u)) {
  return Math::reciprocal_unit(u);
}
template <typename Math>
KPF_HOST_DEVICE float reciprocal_unit(float u, long) {
  return 1.0f / u;
}

template <typename Math>
KPF_HOST_DEVICE LogitParts logit_parts(float z) {
  const float e = Math::exp_nonpositive(-fabsf(z));  // in [0, 1]
  const float log_term = Math::log1p_unit(e);
  const float inv = reciprocal_unit<Math>(1.0f + e, 0);
  const float big = inv, small = e * inv;
  LogitParts r;
  r.p = Math::select(z >= 0.0f, big, small);
  r.q = Math::select(z >= 0.0f, small, big);
  r.softplus_pos = max_of<Math>(z, 0.0f) + log_term;
  r.softplus_neg = max_of<Math>(-z, 0.0f) + log_term;
  return r;
}

// The exponent policy, a compile-time choice made at launch (every backend uses the same one):
// FIXED means the exponents are the published defaults, focal gamma = 2 and cornernet alpha = 2,
// beta = 4, whose powers are a few multiplications; otherwise the general (runtime) powers run.
// mse raises nothing to a power: it always takes FIXED, so it is compiled once.
inline bool fixed_exponents(LossKind kind, const LossParams& P) {
  if (kind == LossKind::FOCAL) return P.gamma == 2.0f;
  if (kind == LossKind::CORNERNET) return P.alpha == 2.0f && P.beta == 4.0f;
  return true;
}

// fn(kind tag, fixed tag) for a kind with exponents: the fixed or the general powers.
template <LossKind KIND, typename Fn>
void dispatch_exponents(bool fixed, Fn&& fn) {
  if (fixed) {
    fn(std::integral_constant<LossKind, KIND>{}, std::true_type{});
  } else {
    fn(std::integral_constant<LossKind, KIND>{}, std::false_type{});
  }
}

// Calls fn(kind tag, fixed tag) with the loss kind and the exponent policy as compile-time
// constants (std::integral_constant<LossKind, ...>, std::bool_constant<...>).
template <typename Fn>
void dispatch_loss(LossKind kind, const LossParams& P, Fn&& fn) {
  const bool fixed = fixed_exponents(kind, P);
  switch (kind) {
    case LossKind::MSE: fn(std::integral_constant<LossKind, LossKind::MSE>{}, std::true_type{}); break;  // no powers
    case LossKind::FOCAL: dispatch_exponents<LossKind::FOCAL>(fixed, fn); break;
    case LossKind::CORNERNET: dispatch_exponents<LossKind::CORNERNET>(fixed, fn); break;
  }
}

// The unweighted loss of one pixel or (GRADIENT) its derivative w.r.t. the prediction x.
// Branch-free apart from compile-time choices, so that a CPU loop over pixels vectorises.
// FIXED: the exponents are gamma = 2 (focal) or alpha = 2, beta = 4 (cornernet), whatever P holds
// (see fixed_exponents); the powers are then plain products.
template <LossKind KIND, bool GRADIENT, typename Math = PreciseMath, bool FIXED = false>
KPF_HOST_DEVICE float pixel_loss(float x, float t, bool positive, const LossParams& P) {
  if (KIND == LossKind::MSE) {
    const float d = x - t;
    if (GRADIENT) return 2.0f * d + P.l1_weight * sign_of<Math>(d);
    return d * d + P.l1_weight * fabsf(d);
  }
  const LogitParts s = logit_parts<Math>(x);
  const float pq = s.p * s.q;  // dp/dz
  const float diff = s.p - t;
  float value;
  if (KIND == LossKind::FOCAL) {
    const float alpha_t = P.alpha * t + (1.0f - P.alpha) * (1.0f - t);
    const float bce = t * s.softplus_neg + (1.0f - t) * s.softplus_pos;  // BCEWithLogits(z, t)
    if (FIXED) {
      // |t - p|^2 = diff^2 and d diff^2 / dz = 2 diff p q: no absolute value, no sign, no select.
      const float modulation = diff * diff;
      if (GRADIENT) {
        value = alpha_t * (2.0f * diff * pq * bce + modulation * diff);
      } else {
        value = alpha_t * modulation * bce;
      }
    } else {
      const float d = fabsf(diff);
      const float modulation = Math::pow(d, P.gamma);
      if (GRADIENT) {
        // d|t - p|^gamma / dz = gamma |t - p|^(gamma - 1) sign(p - t) p q, taken as 0 where p == t.
        const float d_modulation_any = P.gamma * Math::pow(d, P.gamma - 1.0f) * sign_of<Math>(diff) * pq;
        const float d_modulation = Math::select(d > 0.0f, d_modulation_any, 0.0f);
        value = alpha_t * (d_modulation * bce + modulation * diff);
      } else {
        value = alpha_t * modulation * bce;
      }
    }
  } else {  // CORNERNET: both terms, then a select (no data-dependent branch)
    float qa, neg;
    if (FIXED) {
      const float u = 1.0f - t, u2 = u * u;  // (1 - t)^4 needs no clamp: an even power
      qa = s.q * s.q;
      neg = (u2 * u2) * (s.p * s.p);
    } else {
      qa = Math::pow(s.q, P.alpha);
      neg = Math::pow(max_of<Math>(1.0f - t, 0.0f), P.beta) * Math::pow(s.p, P.alpha);
    }
    const float alpha = FIXED ? 2.0f : P.alpha;
    if (GRADIENT) {
      // (1 - p)^alpha (-log p):                  d/dz = -q^alpha (alpha p softplus(-z) + q)
      // (1 - t)^beta p^alpha (-log(1 - p)):      d/dz = (1 - t)^beta p^alpha (alpha q softplus(z) + p)
      const float positive_value = -qa * (alpha * s.p * s.softplus_neg + s.q);
      const float negative_value = neg * (alpha * s.q * s.softplus_pos + s.p);
      value = Math::select(positive, positive_value, negative_value);
    } else {
      const float positive_value = qa * s.softplus_neg;
      const float negative_value = neg * s.softplus_pos;
      value = Math::select(positive, positive_value, negative_value);
    }
  }
  if (GRADIENT) return value + P.l1_weight * sign_of<Math>(diff) * pq;
  return value + P.l1_weight * fabsf(diff);
}

// The cornernet positive of a keypoint: the pixel floor(kp + 0.5) when the keypoint is valid (the
// render rule) and that pixel lies on the map, else (-1, -1). Compared in floating point before
// the conversion to int, so that huge coordinates (valid under a huge sigma) cannot overflow.
KPF_HOST_DEVICE void positive_pixel(float x, float y, bool valid, int height, int width, int* px, int* py) {
  const float mx = floorf(x + 0.5f), my = floorf(y + 0.5f);
  const bool on_map = valid && mx >= 0.0f && mx < float(width) && my >= 0.0f && my < float(height);
  *px = on_map ? static_cast<int>(mx) : -1;
  *py = on_map ? static_cast<int>(my) : -1;
}

// w = keypoint_weight where t > threshold, else background_weight (times the map's weight).
template <typename Math = PreciseMath>
KPF_HOST_DEVICE float pixel_weight(float t, const LossParams& P) {
  return Math::select(t > P.threshold, P.keypoint_weight, P.background_weight);
}

inline LossParams make_loss_params(double alpha, double gamma, double beta, double keypoint_weight,
                                   double background_weight, double threshold, double l1_weight) {
  return LossParams{static_cast<float>(alpha),           static_cast<float>(gamma),
                    static_cast<float>(beta),            static_cast<float>(keypoint_weight),
                    static_cast<float>(background_weight), static_cast<float>(threshold),
                    static_cast<float>(l1_weight)};
}

}  // namespace kpfast
