// The goodness ops on CPU (goodness_fwd, row_scale, ff_loss_fwd, normalize_fwd, normalize_bwd):
// goodness, FF losses and length normalization. Parallel over rows with at::parallel_for; each row
// is one vectorized pass (row_math.h). Schemas and the math: csrc/ops.cpp. Inputs were validated at
// the Python boundary; the checks (csrc/common.h, csrc/goodness.h) only guard the raw-pointer
// contract (2-D, unit last stride, sizes). CUDA kernels: csrc/cuda/goodness{.cu,_cuda.cpp}; C++
// autograd: csrc/goodness.cpp.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <optional>
#include <tuple>

#include "cpu/alloc.h"
#include "cpu/row_math.h"
#include "goodness.h"

namespace ffops::cpu {
namespace {

// Rows per task: enough elements that a task amortizes the thread hand-off.
int64_t grain_rows(int64_t features) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, features)); }

template <typename A>
A softplus(A z) {
  // max(z, 0) + log1p(exp(-|z|)): no overflow for large |z|; NaN propagates.
  return (z > A(0) ? z : A(0)) + std::log1p(std::exp(-std::abs(z)));
}

at::Tensor goodness_fwd(const at::Tensor& h, double scale) {
  check_rows(h, "h");
  at::Tensor g = empty_stat(h);
  const int64_t rows = h.size(0), k = h.size(1), ld = h.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffops_goodness_fwd", [&] {
    using acc_t = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    acc_t* gp = g.mutable_data_ptr<acc_t>();
    const acc_t s = static_cast<acc_t>(scale);
    at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) gp[r] = s * sumsq(hp + r * ld, k);
    });
  });
  return g;
}

at::Tensor row_scale(const at::Tensor& h, const at::Tensor& coef) {
  check_rows(h, "h");
  check_stat(coef, h, "coef");
  at::Tensor out = empty_large(h.sizes(), h.options());
  const int64_t rows = h.size(0), k = h.size(1), ld = h.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffops_row_scale", [&] {
    using acc_t = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const acc_t* cp = coef.const_data_ptr<acc_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) scale(hp + r * ld, cp[r], op + r * k, k);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> ff_loss_fwd(const at::Tensor& h, double scale, double coef, double theta,
                                               const std::optional<at::Tensor>& target) {
  check_rows(h, "h");
  if (target.has_value()) check_stat(*target, h, "target");
  at::Tensor g = empty_stat(h);
  at::Tensor loss = empty_stat(h);
  const int64_t rows = h.size(0), k = h.size(1), ld = h.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffops_ff_loss_fwd", [&] {
    using acc_t = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const acc_t* tp = target.has_value() ? target->const_data_ptr<acc_t>() : nullptr;
    acc_t* gp = g.mutable_data_ptr<acc_t>();
    acc_t* lp = loss.mutable_data_ptr<acc_t>();
    const acc_t s = static_cast<acc_t>(scale), c = static_cast<acc_t>(coef), th = static_cast<acc_t>(theta);
    at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const acc_t gr = s * sumsq(hp + r * ld, k);
        gp[r] = gr;
        lp[r] = softplus(c * ((tp ? tp[r] : th) - gr));
      }
    });
  });
  return {g, loss};
}

std::tuple<at::Tensor, at::Tensor> normalize_fwd(const at::Tensor& h, double norm_scale, double eps) {
  check_rows(h, "h");
  at::Tensor y = empty_large(h.sizes(), h.options());
  at::Tensor s = empty_stat(h);
  const int64_t rows = h.size(0), k = h.size(1), ld = h.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffops_normalize_fwd", [&] {
    using acc_t = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    acc_t* sp = s.mutable_data_ptr<acc_t>();
    const acc_t ns = static_cast<acc_t>(norm_scale), e = static_cast<acc_t>(eps);
    at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const acc_t sr = sumsq(hp + r * ld, k);
        sp[r] = sr;
        scale(hp + r * ld, acc_t(1) / (std::sqrt(ns * sr) + e), yp + r * k, k);
      }
    });
  });
  return {y, s};
}

at::Tensor normalize_bwd(const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_s, const at::Tensor& h,
                         const at::Tensor& s, double norm_scale, double eps) {
  check_normalize_bwd_args(grad_y, grad_s, h, s);
  at::Tensor dh = empty_large(h.sizes(), h.options());
  const int64_t rows = h.size(0), k = h.size(1), ldh = h.stride(0), ldg = grad_y.stride(0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, h.scalar_type(), "ffops_normalize_bwd", [&] {
    using acc_t = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const scalar_t* gyp = grad_y.const_data_ptr<scalar_t>();
    const acc_t* sp = s.const_data_ptr<acc_t>();
    const acc_t* gsp = grad_s.has_value() ? grad_s->const_data_ptr<acc_t>() : nullptr;
    scalar_t* dp = dh.mutable_data_ptr<scalar_t>();
    const acc_t ns = static_cast<acc_t>(norm_scale), e = static_cast<acc_t>(eps);
    at::parallel_for(0, rows, grain_rows(k), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const scalar_t* hr = hp + r * ldh;
        const scalar_t* gr = gyp + r * ldg;
        const acc_t n = std::sqrt(ns * sp[r]);
        const acc_t inv = acc_t(1) / (n + e);
        // d/dh of 1/(n + eps) is -inv^2 * ns / n * h; at n == 0 the row is all zeros and the
        // term vanishes (the subgradient torch's norm uses).
        acc_t c = n > acc_t(0) ? -inv * inv * ns / n * dot(gr, hr, k) : acc_t(0);
        if (gsp) c += acc_t(2) * gsp[r];
        axpby(inv, gr, c, hr, dp + r * k, k);
      }
    });
  });
  return dh;
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("goodness_fwd", &ffops::cpu::goodness_fwd);
  m.impl("row_scale", &ffops::cpu::row_scale);
  m.impl("ff_loss_fwd", &ffops::cpu::ff_loss_fwd);
  m.impl("normalize_fwd", &ffops::cpu::normalize_fwd);
  m.impl("normalize_bwd", &ffops::cpu::normalize_bwd);
}
