// Vectorizable row primitives shared by the C++ CPU kernels. Each accumulates in the
// "opmath" type (float for float / half / bfloat16, double for double).
//
// The float entry points are compiled several times (AVX-512, AVX2+FMA, baseline) with GCC's
// target_clones and picked at load time from the CPU's features, so one build runs fast on
// any x86-64 machine without -march=native.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FFOPS_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FFOPS_MULTIVERSION
#endif

namespace ffops::cpu {

template <typename T>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};
template <typename T>
using opmath_t = typename OpMath<T>::type;

// sum_i x[i]^2
template <typename T>
inline opmath_t<T> sumsq_impl(const T* x, int64_t n) {
  opmath_t<T> acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    const opmath_t<T> v = static_cast<opmath_t<T>>(x[i]);
    acc += v * v;
  }
  return acc;
}

// sum_i a[i] * b[i]
template <typename T>
inline opmath_t<T> dot_impl(const T* a, const T* b, int64_t n) {
  opmath_t<T> acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    acc += static_cast<opmath_t<T>>(a[i]) * static_cast<opmath_t<T>>(b[i]);
  }
  return acc;
}

// out[i] = c * x[i]
template <typename T>
inline void scale_impl(const T* x, opmath_t<T> c, T* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(c * static_cast<opmath_t<T>>(x[i]));
  }
}

// out[i] = a * x[i] + b * y[i]
template <typename T>
inline void axpby_impl(opmath_t<T> a, const T* x, opmath_t<T> b, const T* y, T* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(a * static_cast<opmath_t<T>>(x[i]) + b * static_cast<opmath_t<T>>(y[i]));
  }
}

// One multiversioned overload per storage type.
#define FFOPS_ROW_MATH_FOR(T)                                                                 \
  FFOPS_MULTIVERSION inline opmath_t<T> sumsq(const T* x, int64_t n) { return sumsq_impl(x, n); } \
  FFOPS_MULTIVERSION inline opmath_t<T> dot(const T* a, const T* b, int64_t n) {              \
    return dot_impl(a, b, n);                                                                  \
  }                                                                                            \
  FFOPS_MULTIVERSION inline void scale(const T* x, opmath_t<T> c, T* out, int64_t n) {       \
    scale_impl(x, c, out, n);                                                                  \
  }                                                                                            \
  FFOPS_MULTIVERSION inline void axpby(opmath_t<T> a, const T* x, opmath_t<T> b, const T* y, \
                                       T* out, int64_t n) {                                    \
    axpby_impl(a, x, b, y, out, n);                                                            \
  }

FFOPS_ROW_MATH_FOR(float)
FFOPS_ROW_MATH_FOR(double)
FFOPS_ROW_MATH_FOR(c10::Half)
FFOPS_ROW_MATH_FOR(c10::BFloat16)

#undef FFOPS_ROW_MATH_FOR

}  // namespace ffops::cpu
