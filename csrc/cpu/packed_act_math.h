// Branch-free float math for the activation kernels (csrc/cpu/packed_act.cpp): every function is
// straight-line code (both branches computed, then selected), so GCC vectorizes the loops that
// call them under `#pragma omp simd` in each target_clones variant (AVX-512, AVX2+FMA, SSE2).
// double uses the C library (the float64 path exists for gradcheck and tests, not for speed).
//
// Accuracy (float, measured against float64 over dense grids): exp ~1 ulp (also into the subnormals, 0 and inf
// where e^x rounds to them); expm1 and log1p a few
// ulps relative; erfc 1.2e-7 relative plus the rounding of a^2 (the short erfc for 16-bit results:
// 8e-6); the activations are within a few ulps of their magnitude (or of 1 where they cancel), like
// torch's own vectorized CPU kernels (whose erf is off by up to 1.5e-7 absolute). NaN propagates
// through every one.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu/row_math.h"  // FFOPS_AI

namespace ffops::cpu::actmath {

// Activation ids: the order of ffops.reference.packed_act.ACTIVATIONS.
enum Fn : int {
  kGelu = 0,
  kGeluTanh,
  kSilu,
  kTanh,
  kSigmoid,
  kSoftplus,
  kElu,
  kMish,
  kHardswish,
  kLeakyRelu,
  kSelu,
  kCelu,
  kLogSigmoid,
  kSoftsign,
  kRelu6,
  kNumFns
};

// SELU's constants (Klambauer et al., 2017; torch's values) and leaky ReLU's default negative slope.
inline constexpr double kSeluScale = 1.0507009873554804934193349852946;
inline constexpr double kSeluAlphaScale = 1.6732632423543772848170429916717 * kSeluScale;
inline constexpr double kLeakySlope = 0.01;

FFOPS_AI float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// e^x = p 2^n: n = round(x / ln 2) (returned as a float holding an integer) and p = e^(x - n ln 2) in
// [0.7, 1.42] (Cody-Waite reduction, degree-6 polynomial, ~1 ulp).
FFOPS_AI float exp_reduced_f(float x, float& n) {
  // n = round(x / ln 2) with the 1.5 * 2^23 trick (exact: no fast-math reassociation).
  const float shifter = 12582912.0f;
  n = (x * 1.44269504088896341f + shifter) - shifter;
  float r = x - n * 0.693359375f;  // ln 2 = 0.693359375 - 2.12194440e-4
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * (r * r) + r + 1.0f;
}

// e^x for x in [-87.3, 88] only (2^n is one normal factor built from the exponent bits): for arguments
// known to be in that range (erfc's), where it is cheaper than exp_f.
FFOPS_AI float exp_core_f(float x) {
  float n;
  const float p = exp_reduced_f(x, n);
  return p * bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 127) << 23);
}

// e^x rounded to inf above ~88.72 (where it overflows), exact to ~1 ulp down to x = -86, and e^-86
// (~2e-38, not 0) below: for 1 + e^x and e^x - 1, where the low end is absorbed (sigmoid, SiLU, tanh-GELU,
// expm1). One normal factor 2^(n-1) (n <= 128) times 2, so the top rounds as e^x does. Cheaper than exp_f.
FFOPS_AI float exp_sat_f(float x) {
  x = x > 89.0f ? 89.0f : x;
  x = x < -86.0f ? -86.0f : x;
  float n;
  const float p = exp_reduced_f(x, n);
  return (p * bits_to_float(static_cast<uint32_t>(static_cast<int32_t>(n) + 126) << 23)) * 2.0f;
}

// e^x on the whole float range, NaN propagating: x is clamped to [-104, 89] (e^-104 is below half the
// smallest subnormal and e^89 above FLT_MAX, so both ends round as e^x does: 0 and inf), n is then in
// [-150, 129] and 2^n is applied in two normal factors 2^(n/2) 2^(n - n/2): the first product is exact,
// the second rounds once, also into the subnormals. NaN passes the clamps (comparisons are false).
FFOPS_AI float exp_f(float x) {
  x = x > 89.0f ? 89.0f : x;
  x = x < -104.0f ? -104.0f : x;
  float n;
  const float p = exp_reduced_f(x, n);
  const int32_t ni = static_cast<int32_t>(n);  // NaN: any value; p is NaN
  const int32_t half = ni >> 1;
  return (p * bits_to_float(static_cast<uint32_t>(half + 127) << 23)) *
         bits_to_float(static_cast<uint32_t>(ni - half + 127) << 23);
}

// e^x - 1, accurate relative to the result near 0 (Taylor for |x| < 0.35).
FFOPS_AI float expm1_f(float x) {
  float p = 1.0f / 362880.0f;
  p = p * x + 1.0f / 40320.0f;
  p = p * x + 1.0f / 5040.0f;
  p = p * x + 1.0f / 720.0f;
  p = p * x + 1.0f / 120.0f;
  p = p * x + 1.0f / 24.0f;
  p = p * x + 1.0f / 6.0f;
  p = p * x + 0.5f;
  p = p * (x * x) + x;
  const float big = exp_sat_f(x) - 1.0f;
  const float small = x == 0.0f ? x : p;  // keeps the sign of a zero x (p is +0 at -0)
  return std::fabs(x) < 0.35f ? small : big;
}

// log(1 + u) for u in [0, 1]: 2 atanh(s), s = u / (2 + u) in [0, 1/3].
FFOPS_AI float log1p_unit_f(float u) {
  const float s = u / (2.0f + u);
  const float z = s * s;
  float p = 1.0f / 17.0f;
  p = p * z + 1.0f / 15.0f;
  p = p * z + 1.0f / 13.0f;
  p = p * z + 1.0f / 11.0f;
  p = p * z + 1.0f / 9.0f;
  p = p * z + 1.0f / 7.0f;
  p = p * z + 1.0f / 5.0f;
  p = p * z + 1.0f / 3.0f;
  return 2.0f * (s + s * z * p);
}

// erfc(a) for a >= 0: t exp(-a^2 + P(t)), t = 1 / (1 + a / 2). kShort = false: Numerical Recipes'
// erfcc (degree 9, relative error < 1.2e-7 in exact arithmetic); kShort = true: our own degree-5
// minimax fit of P on [0, 9.2] (7.8e-6), for results stored in 16-bit types (half an ulp of bfloat16 is
// 2e-3 relative, of float16 2.4e-4). In float the rounding of a^2 adds ~a^2 * 6e-8 relative. Past
// a = 9.2 (erfc < 2e-38) the result is 0.
template <bool kShort>
FFOPS_AI float erfc_nonneg(float a) {
  const float t = 1.0f / (1.0f + 0.5f * a);
  float p;
  if constexpr (kShort) {
    p = 0.22879677f;
    p = p * t - 0.70920153f;
    p = p * t + 0.47449289f;
    p = p * t + 0.25445197f;
    p = p * t + 1.01800849f;
    p = p * t - 1.26654093f;
  } else {
    p = 0.17087277f;
    p = p * t - 0.82215223f;
    p = p * t + 1.48851587f;
    p = p * t - 1.13520398f;
    p = p * t + 0.27886807f;
    p = p * t - 0.18628806f;
    p = p * t + 0.09678418f;
    p = p * t + 0.37409196f;
    p = p * t + 1.00002368f;
    p = p * t - 1.26551223f;
  }
  const float r = t * exp_core_f(p - a * a);  // in range for a <= 9.2; larger a give 0 below
  return a > 9.2f ? 0.0f : r;                 // NaN: the comparison is false, r is NaN
}

// 1 / (1 + e^-x), as torch: 0 below x ~ -88.7 (e^-x overflows), subnormal just above.
FFOPS_AI float sigmoid_f(float x) { return 1.0f / (1.0f + exp_sat_f(-x)); }

// Phi(x) = P[N(0,1) <= x] = erfc(-x / sqrt 2) / 2, accurate relative in the lower tail.
template <bool kShort>
FFOPS_AI float normal_cdf_f(float x) {
  const float half_erfc = 0.5f * erfc_nonneg<kShort>(std::fabs(x) * 0.70710678118654752f);
  return x > 0.0f ? 1.0f - half_erfc : half_erfc;
}

// tanh(x) = sign(x) e / (e + 2), e = e^(2|x|) - 1; |x| >= 20 gives +-1 (2|x| is capped there, where
// e / (e + 2) rounds to 1, so e never overflows into inf / inf).
FFOPS_AI float tanh_f(float x) {
  float a = 2.0f * std::fabs(x);
  a = a > 40.0f ? 40.0f : a;  // NaN passes
  const float e = expm1_f(a);
  return std::copysign(e / (e + 2.0f), x);
}

FFOPS_AI float softplus_f(float x) { return (x > 0.0f ? x : 0.0f) + log1p_unit_f(exp_f(-std::fabs(x))); }

// The activation `FN` at x (float). kShort: the result is stored in a 16-bit type, so GELU may use the
// shorter erfc (the other activations are as cheap as their accurate form).
template <int FN, bool kShort = false>
FFOPS_AI float act_f(float x) {
  if constexpr (FN == kGelu) {
    return x * normal_cdf_f<kShort>(x);
  } else if constexpr (FN == kGeluTanh) {
    // 0.5 x (1 + tanh(z)) = x * sigmoid(2 z),  z = sqrt(2 / pi) (x + 0.044715 x^3)
    // Divided, not multiplied by sigmoid(2 z): x / (1 + e^-2z) keeps full precision where sigmoid would be
    // subnormal, and gives -0 where e^-2z overflows (as torch).
    const float z2 = 1.5957691216057308f * (x + 0.044715f * x * x * x);
    return x / (1.0f + exp_sat_f(-z2));
  } else if constexpr (FN == kSilu) {
    return x / (1.0f + exp_sat_f(-x));  // as torch: -0 where e^-x overflows, NaN at -inf
  } else if constexpr (FN == kTanh) {
    return tanh_f(x);
  } else if constexpr (FN == kSigmoid) {
    return sigmoid_f(x);
  } else if constexpr (FN == kSoftplus) {
    return softplus_f(x);
  } else if constexpr (FN == kElu) {
    return x > 0.0f ? x : expm1_f(x);
  } else if constexpr (FN == kHardswish) {
    // x min(max(x + 3, 0), 6) / 6, NaN passing the selects; t / 6 first, so x t never overflows
    float t = x + 3.0f;
    t = t < 0.0f ? 0.0f : t;
    t = t > 6.0f ? 6.0f : t;
    return x * (t / 6.0f);
  } else if constexpr (FN == kLeakyRelu) {
    return x > 0.0f ? x : x * static_cast<float>(kLeakySlope);
  } else if constexpr (FN == kSelu) {
    return x > 0.0f ? static_cast<float>(kSeluScale) * x : static_cast<float>(kSeluAlphaScale) * expm1_f(x);
  } else if constexpr (FN == kCelu) {  // alpha 1: elu
    return x > 0.0f ? x : expm1_f(x);
  } else if constexpr (FN == kLogSigmoid) {
    // min(x, 0) - log1p(e^-|x|): +0 where e^-|x| underflows (x > ~104), as torch's float32 function
    return (x < 0.0f ? x : 0.0f) - log1p_unit_f(exp_f(-std::fabs(x)));
  } else if constexpr (FN == kSoftsign) {
    return x / (1.0f + std::fabs(x));
  } else if constexpr (FN == kRelu6) {
    const float t = x < 0.0f ? 0.0f : x;  // keeps -0 and NaN, as torch's hardtanh
    return t > 6.0f ? 6.0f : t;
  } else {
    static_assert(FN == kMish);
    // mish = x tanh(softplus(x)) = x n (n + 2) / (n (n + 2) + 2), n = e^x; = x for x > 20.
    const float n = exp_f(x > 20.0f ? 20.0f : x);
    const float m = n * (n + 2.0f);
    return x > 20.0f ? x : x * (m / (m + 2.0f));
  }
}

// The activation `FN` at x (double; C library).
template <int FN>
inline double act_d(double x) {
  if constexpr (FN == kGelu) {
    return 0.5 * x * std::erfc(-x * 0.70710678118654752440);
  } else if constexpr (FN == kGeluTanh) {
    return 0.5 * x * (1.0 + std::tanh(0.79788456080286535588 * (x + 0.044715 * x * x * x)));
  } else if constexpr (FN == kSilu) {
    return x / (1.0 + std::exp(-x));
  } else if constexpr (FN == kTanh) {
    return std::tanh(x);
  } else if constexpr (FN == kSigmoid) {
    return 1.0 / (1.0 + std::exp(-x));
  } else if constexpr (FN == kSoftplus) {
    return (x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x)));
  } else if constexpr (FN == kElu) {
    return x > 0.0 ? x : std::expm1(x);
  } else if constexpr (FN == kMish) {
    return x * std::tanh((x > 0.0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x))));
  } else if constexpr (FN == kHardswish) {
    double t = x + 3.0;
    t = t < 0.0 ? 0.0 : t;
    t = t > 6.0 ? 6.0 : t;
    return x * t / 6.0;
  } else if constexpr (FN == kLeakyRelu) {
    return x > 0.0 ? x : x * kLeakySlope;
  } else if constexpr (FN == kSelu) {
    return x > 0.0 ? kSeluScale * x : kSeluAlphaScale * std::expm1(x);
  } else if constexpr (FN == kCelu) {
    return x > 0.0 ? x : std::expm1(x);
  } else if constexpr (FN == kLogSigmoid) {
    return (x < 0.0 ? x : 0.0) - std::log1p(std::exp(-std::fabs(x)));
  } else if constexpr (FN == kSoftsign) {
    return x / (1.0 + std::fabs(x));
  } else {
    const double t = x < 0.0 ? 0.0 : x;
    return t > 6.0 ? 6.0 : t;
  }
}

}  // namespace ffops::cpu::actmath
