// The fused Forward-Forward layer on CPU: torch's GEMM (MKL / oneDNN through at::mm) plus one
// fused C++ pass before or after it (ff_linear_fwd / ff_linear_bwd). Schemas and math: csrc/ops.cpp;
// argument checks shared with CUDA: csrc/ff_linear.h; CUDA: csrc/cuda/ff_linear{.cu,_cuda.cpp};
// C++ autograd: csrc/ff_linear.cpp.
//   forward:  h = relu(x_scale * (x @ W^T) + b) in place over the GEMM result, with the row sums
//             of h^2 and the column sums of h over positive rows in the same pass;
//   backward: u = x_scale * dpre (dpre = 2 grad_sumsq h + peer-norm term) and grad_bias in one
//             pass over h, then grad_weight = u^T @ x.
// Parallel over rows with at::parallel_for; column sums go to per-thread partial rows.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/div.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu/alloc.h"
#include "cpu/row_math.h"
#include "ff_linear.h"

namespace ffops::cpu {
namespace {

// Column sums of the per-thread partial rows [threads, n] -> [n], divided by `divisor`.
at::Tensor reduce_partials(const at::Tensor& partials, double divisor) { return partials.sum(0).div_(divisor); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_fwd(const at::Tensor& x,
                                                             const std::optional<at::Tensor>& x_scale,
                                                             const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias, int64_t n_pos) {
  check_ff_linear_fwd_args(x, x_scale, weight, bias, n_pos);
  const int64_t rows = x.size(0), out = weight.size(0);
  at::Tensor h = empty_large({rows, out}, x.options());
  at::mm_out(h, x, weight.t());
  at::Tensor sumsq = empty_stat(x);
  const auto acc_options = x.options().dtype(stat_type(x.scalar_type()));
  at::Tensor col = at::zeros({at::get_num_threads(), out}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffops_ff_linear_fwd", [&] {
    using A = opmath_t<scalar_t>;
    scalar_t* hp = h.mutable_data_ptr<scalar_t>();
    const scalar_t* bp = bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr;
    const A* sp = x_scale.has_value() ? x_scale->const_data_ptr<A>() : nullptr;
    A* ssp = sumsq.mutable_data_ptr<A>();
    A* colp = col.mutable_data_ptr<A>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, out)), [&](int64_t begin, int64_t end) {
      A* my_col = colp + at::get_thread_num() * out;
      for (int64_t r = begin; r < end; ++r) {
        ssp[r] = bias_relu_sumsq(hp + r * out, bp, sp ? sp[r] : A(1), r < n_pos ? my_col : nullptr, out);
      }
    });
  });
  return {h, sumsq, reduce_partials(col, static_cast<double>(n_pos))};
}

std::tuple<at::Tensor, at::Tensor> ff_linear_bwd(const at::Tensor& x, const std::optional<at::Tensor>& x_scale,
                                                 const at::Tensor& h, const at::Tensor& grad_sumsq,
                                                 const std::optional<at::Tensor>& grad_pos_mean, int64_t n_pos) {
  check_ff_linear_bwd_args(x, x_scale, h, grad_sumsq, grad_pos_mean, n_pos);
  const int64_t rows = x.size(0), out = h.size(1);
  at::Tensor u = empty_large({rows, out}, x.options());
  const auto acc_options = x.options().dtype(stat_type(x.scalar_type()));
  at::Tensor db = at::zeros({at::get_num_threads(), out}, acc_options);
  // The peer-normalization term acts on positive rows as a per-column vector v = grad_pos_mean / n_pos.
  at::Tensor v;
  if (grad_pos_mean.has_value() && n_pos > 0) v = grad_pos_mean->div(static_cast<double>(n_pos));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffops_ff_linear_bwd", [&] {
    using A = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    scalar_t* up = u.mutable_data_ptr<scalar_t>();
    const A* sp = x_scale.has_value() ? x_scale->const_data_ptr<A>() : nullptr;
    const A* gp = grad_sumsq.const_data_ptr<A>();
    const A* vp = v.defined() ? v.const_data_ptr<A>() : nullptr;
    A* dbp = db.mutable_data_ptr<A>();
    at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(1, out)), [&](int64_t begin, int64_t end) {
      A* my_db = dbp + at::get_thread_num() * out;
      for (int64_t r = begin; r < end; ++r) {
        dpre(hp + r * out, A(2) * gp[r], sp ? sp[r] : A(1), r < n_pos ? vp : nullptr, up + r * out, my_db, out);
      }
    });
  });
  return {at::mm(u.t(), x), db.sum(0).to(x.scalar_type())};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("ff_linear_fwd", &ffops::cpu::ff_linear_fwd);
  m.impl("ff_linear_bwd", &ffops::cpu::ff_linear_bwd);
}
