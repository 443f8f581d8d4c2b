// MS-LayerNorm / MS-RMSNorm on CPU (ms_norm_fwd / ms_norm_bwd): normalization without affine whose backward needs only
// the output y and rstd. Schemas and the math: csrc/ops.cpp. Parallel over rows; each row is a few vectorized passes
// (the row stays in L1/L2 between them). The output may have another dtype than the input (the autocast dtype), so the
// row primitives take two storage types. Argument checks shared with CUDA: csrc/common.h, csrc/ms_norm.h; CUDA:
// csrc/cuda/ms_norm{.cu,_cuda.cpp}; C++ autograd: csrc/ms_norm.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>
#include <utility>

#include "cpu/alloc.h"
#include "cpu/convert.h"
#include "cpu/row_math.h"  // opmath_t, FFOPS_MULTIVERSION
#include "ms_norm.h"

namespace ffops::cpu {
namespace {

int64_t grain_rows(int64_t features) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, features)); }

// sum_i x[i]. The row is split into four quarters summed side by side, so the vectorized loop
// carries four independent accumulator chains instead of one (a single chain is bound by the latency
// of the add, not by the loads, on rows that sit in L1).
template <typename T>
FFOPS_AI opmath_t<T> row_sum_impl(const T* x, int64_t n) {
  using A = opmath_t<T>;
  const int64_t q = n / 4;
  A s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < q; ++i) {
    s0 += cvt::ld(x, i);
    s1 += cvt::ld(x, i + q);
    s2 += cvt::ld(x, i + 2 * q);
    s3 += cvt::ld(x, i + 3 * q);
  }
  for (int64_t i = 4 * q; i < n; ++i) s0 += cvt::ld(x, i);
  return (s0 + s1) + (s2 + s3);
}

// sum_i (x[i] - m)^2, four chains as row_sum_impl.
template <typename T>
FFOPS_AI opmath_t<T> row_sqdev_impl(const T* x, opmath_t<T> m, int64_t n) {
  using A = opmath_t<T>;
  const int64_t q = n / 4;
  A s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
  for (int64_t i = 0; i < q; ++i) {
    const A d0 = cvt::ld(x, i) - m, d1 = cvt::ld(x, i + q) - m;
    const A d2 = cvt::ld(x, i + 2 * q) - m, d3 = cvt::ld(x, i + 3 * q) - m;
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (int64_t i = 4 * q; i < n; ++i) {
    const A d = cvt::ld(x, i) - m;
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

// (sum_i g[i], sum_i g[i] * y[i]) in one pass, four chains per sum as row_sum_impl.
template <typename T>
FFOPS_AI std::pair<opmath_t<T>, opmath_t<T>> row_sum_dot_impl(const T* g, const T* y, int64_t n) {
  using A = opmath_t<T>;
  const int64_t q = n / 4;
  A s0 = 0, s1 = 0, s2 = 0, s3 = 0, d0 = 0, d1 = 0, d2 = 0, d3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, d0, d1, d2, d3)
  for (int64_t i = 0; i < q; ++i) {
    const A g0 = cvt::ld(g, i), g1 = cvt::ld(g, i + q), g2 = cvt::ld(g, i + 2 * q), g3 = cvt::ld(g, i + 3 * q);
    s0 += g0;
    s1 += g1;
    s2 += g2;
    s3 += g3;
    d0 += g0 * cvt::ld(y, i);
    d1 += g1 * cvt::ld(y, i + q);
    d2 += g2 * cvt::ld(y, i + 2 * q);
    d3 += g3 * cvt::ld(y, i + 3 * q);
  }
  for (int64_t i = 4 * q; i < n; ++i) {
    const A gi = cvt::ld(g, i);
    s0 += gi;
    d0 += gi * cvt::ld(y, i);
  }
  return {(s0 + s1) + (s2 + s3), (d0 + d1) + (d2 + d3)};
}

// y[i] = (x[i] - m) * r
template <typename T, typename O>
FFOPS_AI void row_normalize_impl(const T* x, opmath_t<T> m, opmath_t<T> r, O* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) cvt::st(y, i, (cvt::ld(x, i) - m) * r);
}

// dx[i] = r * (g[i] - a - y[i] * b)
template <typename O, typename D>
FFOPS_AI void row_backward_impl(const O* g, const O* y, opmath_t<O> r, opmath_t<O> a, opmath_t<O> b, D* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    cvt::st(dx, i, r * (cvt::ld(g, i) - a - cvt::ld(y, i) * b));
  }
}

#define FFOPS_NORM_ROW_FOR(T)                                                                                    \
  FFOPS_MULTIVERSION inline opmath_t<T> row_sum(const T* x, int64_t n) { return row_sum_impl(x, n); }            \
  FFOPS_MULTIVERSION inline opmath_t<T> row_sqdev(const T* x, opmath_t<T> m, int64_t n) {                        \
    return row_sqdev_impl(x, m, n);                                                                              \
  }                                                                                                              \
  FFOPS_MULTIVERSION inline std::pair<opmath_t<T>, opmath_t<T>> row_sum_dot(const T* g, const T* y, int64_t n) { \
    return row_sum_dot_impl(g, y, n);                                                                            \
  }
#define FFOPS_NORM_PAIR_FOR(T, O)                                                                                  \
  FFOPS_MULTIVERSION inline void row_normalize(const T* x, opmath_t<T> m, opmath_t<T> r, O* y, int64_t n) {        \
    row_normalize_impl(x, m, r, y, n);                                                                             \
  }                                                                                                                \
  FFOPS_MULTIVERSION inline void row_backward(const T* g, const T* y, opmath_t<T> r, opmath_t<T> a, opmath_t<T> b, \
                                              O* dx, int64_t n) {                                                  \
    row_backward_impl(g, y, r, a, b, dx, n);                                                                       \
  }

FFOPS_NORM_ROW_FOR(float)
FFOPS_NORM_ROW_FOR(double)
FFOPS_NORM_ROW_FOR(c10::Half)
FFOPS_NORM_ROW_FOR(c10::BFloat16)
FFOPS_NORM_PAIR_FOR(double, double)
FFOPS_NORM_PAIR_FOR(float, float)
FFOPS_NORM_PAIR_FOR(float, c10::Half)
FFOPS_NORM_PAIR_FOR(float, c10::BFloat16)
FFOPS_NORM_PAIR_FOR(c10::Half, float)
FFOPS_NORM_PAIR_FOR(c10::Half, c10::Half)
FFOPS_NORM_PAIR_FOR(c10::Half, c10::BFloat16)
FFOPS_NORM_PAIR_FOR(c10::BFloat16, float)
FFOPS_NORM_PAIR_FOR(c10::BFloat16, c10::Half)
FFOPS_NORM_PAIR_FOR(c10::BFloat16, c10::BFloat16)
#undef FFOPS_NORM_ROW_FOR
#undef FFOPS_NORM_PAIR_FOR

// Calls f(O{}) with O the C++ type of `t` (float / half / bfloat16; double only for double).
template <typename T, typename F>
void dispatch_second(at::ScalarType t, F&& f) {
  if constexpr (std::is_same_v<T, double>) {
    f(double{});
  } else {
    switch (t) {
      case at::kHalf: f(c10::Half{}); break;
      case at::kBFloat16: f(c10::BFloat16{}); break;
      default: f(float{}); break;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> ms_norm_fwd(const at::Tensor& x, double eps, bool center,
                                               std::optional<at::ScalarType> out_dtype) {
  const at::Tensor xr = as_rows(x);  // x [..., K] as rows; y and rstd keep x's leading shape
  check_rows(xr, "x");
  const at::ScalarType ot = ms_out_type(x, out_dtype);
  at::Tensor y = empty_large(x.sizes(), x.options().dtype(ot));
  at::Tensor rstd = empty_row_stat(x);
  const int64_t rows = xr.size(0), k = xr.size(1), ld = xr.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffops_ms_norm_fwd", [&] {
    using A = opmath_t<scalar_t>;
    dispatch_second<scalar_t>(ot, [&](auto o) {
      using O = decltype(o);
      const scalar_t* xp = xr.const_data_ptr<scalar_t>();
      O* yp = y.mutable_data_ptr<O>();
      A* rp = rstd.mutable_data_ptr<A>();
      const A inv_k = k > 0 ? A(1) / static_cast<A>(k) : A(0), e = static_cast<A>(eps);
      at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const scalar_t* xr = xp + r * ld;
          const A mean = center ? row_sum(xr, k) * inv_k : A(0);
          const A rs = A(1) / std::sqrt(row_sqdev(xr, mean, k) * inv_k + e);
          rp[r] = rs;
          row_normalize(xr, mean, rs, yp + r * k, k);
        }
      });
    });
  });
  return {y, rstd};
}

at::Tensor ms_norm_bwd(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& rstd, bool center,
                       at::ScalarType dx_dtype) {
  const auto [gr_rows, y_rows] = check_ms_norm_bwd_args(grad_y, y, rstd, dx_dtype);
  at::Tensor dx = empty_large(y.sizes(), y.options().dtype(dx_dtype));
  const int64_t rows = y_rows.size(0), k = y_rows.size(1), ldg = gr_rows.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "ffops_ms_norm_bwd", [&] {
    using A = opmath_t<scalar_t>;
    dispatch_second<scalar_t>(dx_dtype, [&](auto d) {
      using D = decltype(d);
      const scalar_t* gp = gr_rows.const_data_ptr<scalar_t>();
      const scalar_t* yp = y.const_data_ptr<scalar_t>();
      const A* rp = rstd.const_data_ptr<A>();
      D* dp = dx.mutable_data_ptr<D>();
      const A inv_k = k > 0 ? A(1) / static_cast<A>(k) : A(0);
      at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const scalar_t* gr = gp + r * ldg;
          const scalar_t* yr = yp + r * k;
          const auto [sum_g, dot_gy] = row_sum_dot(gr, yr, k);
          row_backward(gr, yr, rp[r], center ? sum_g * inv_k : A(0), dot_gy * inv_k, dp + r * k, k);
        }
      });
    });
  });
  return dx;
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("ms_norm_fwd", &ffops::cpu::ms_norm_fwd);
  m.impl("ms_norm_bwd", &ffops::cpu::ms_norm_bwd);
}
