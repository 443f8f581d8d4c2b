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

// The bodies that multiversioned entry points call must be forced inline: a plain `inline` body that
// GCC declines to inline is compiled once for the default target, and every clone jumps to it.
#define FFOPS_AI inline __attribute__((always_inline))

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
FFOPS_AI opmath_t<T> sumsq_impl(const T* x, int64_t n) {
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
FFOPS_AI opmath_t<T> dot_impl(const T* a, const T* b, int64_t n) {
  opmath_t<T> acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    acc += static_cast<opmath_t<T>>(a[i]) * static_cast<opmath_t<T>>(b[i]);
  }
  return acc;
}

// out[i] = c * x[i]
template <typename T>
FFOPS_AI void scale_impl(const T* x, opmath_t<T> c, T* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(c * static_cast<opmath_t<T>>(x[i]));
  }
}

// out[i] = a * x[i] + b * y[i]
template <typename T>
FFOPS_AI void axpby_impl(opmath_t<T> a, const T* x, opmath_t<T> b, const T* y, T* out, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<T>(a * static_cast<opmath_t<T>>(x[i]) + b * static_cast<opmath_t<T>>(y[i]));
  }
}

// In place h[i] = relu(s * h[i] + b[i]) (b may be nullptr; relu keeps NaN, as torch.relu) and
// returns sum_i h[i]^2; with col != nullptr also col[i] += h[i] (both from the unrounded value).
template <typename T, bool kBias, bool kCol>
FFOPS_AI opmath_t<T> bias_relu_sumsq_loop(T* h, const T* b, opmath_t<T> s, opmath_t<T>* col, int64_t n) {
  using A = opmath_t<T>;
  A acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) {
    A pre = s * static_cast<A>(h[i]);
    if constexpr (kBias) pre += static_cast<A>(b[i]);
    const A v = pre < A(0) ? A(0) : pre;
    h[i] = static_cast<T>(v);
    acc += v * v;
    if constexpr (kCol) col[i] += v;
  }
  return acc;
}

template <typename T>
FFOPS_AI opmath_t<T> bias_relu_sumsq_impl(T* h, const T* b, opmath_t<T> s, opmath_t<T>* col, int64_t n) {
  if (b)
    return col ? bias_relu_sumsq_loop<T, true, true>(h, b, s, col, n)
               : bias_relu_sumsq_loop<T, true, false>(h, b, s, col, n);
  return col ? bias_relu_sumsq_loop<T, false, true>(h, b, s, col, n)
             : bias_relu_sumsq_loop<T, false, false>(h, b, s, col, n);
}

// u[i] = s * d[i], db[i] += d[i], with d[i] = q * h[i] + (v && h[i] > 0 ? v[i] : 0)  (v may be nullptr).
template <typename T, bool kPeer>
FFOPS_AI void dpre_loop(const T* h, opmath_t<T> q, opmath_t<T> s, const opmath_t<T>* v, T* u, opmath_t<T>* db,
                        int64_t n) {
  using A = opmath_t<T>;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const A hv = static_cast<A>(h[i]);
    A d = q * hv;
    if constexpr (kPeer) d += hv > A(0) ? v[i] : A(0);
    u[i] = static_cast<T>(s * d);
    db[i] += d;
  }
}

template <typename T>
FFOPS_AI void dpre_impl(const T* h, opmath_t<T> q, opmath_t<T> s, const opmath_t<T>* v, T* u, opmath_t<T>* db,
                        int64_t n) {
  if (v) {
    dpre_loop<T, true>(h, q, s, v, u, db, n);
  } else {
    dpre_loop<T, false>(h, q, s, v, u, db, n);
  }
}

// One multiversioned overload per storage type.
#define FFOPS_ROW_MATH_FOR(T)                                                                                      \
  FFOPS_MULTIVERSION inline opmath_t<T> sumsq(const T* x, int64_t n) { return sumsq_impl(x, n); }                  \
  FFOPS_MULTIVERSION inline opmath_t<T> dot(const T* a, const T* b, int64_t n) { return dot_impl(a, b, n); }       \
  FFOPS_MULTIVERSION inline void scale(const T* x, opmath_t<T> c, T* out, int64_t n) { scale_impl(x, c, out, n); } \
  FFOPS_MULTIVERSION inline void axpby(opmath_t<T> a, const T* x, opmath_t<T> b, const T* y, T* out, int64_t n) {  \
    axpby_impl(a, x, b, y, out, n);                                                                                \
  }                                                                                                                \
  FFOPS_MULTIVERSION inline opmath_t<T> bias_relu_sumsq(T* h, const T* b, opmath_t<T> s, opmath_t<T>* col,         \
                                                        int64_t n) {                                               \
    return bias_relu_sumsq_impl(h, b, s, col, n);                                                                  \
  }                                                                                                                \
  FFOPS_MULTIVERSION inline void dpre(const T* h, opmath_t<T> q, opmath_t<T> s, const opmath_t<T>* v, T* u,        \
                                      opmath_t<T>* db, int64_t n) {                                                \
    dpre_impl(h, q, s, v, u, db, n);                                                                               \
  }

FFOPS_ROW_MATH_FOR(float)
FFOPS_ROW_MATH_FOR(double)
FFOPS_ROW_MATH_FOR(c10::Half)
FFOPS_ROW_MATH_FOR(c10::BFloat16)

#undef FFOPS_ROW_MATH_FOR

}  // namespace ffops::cpu
