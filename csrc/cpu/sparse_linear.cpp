// The sparse linear layer on CPU (sparse_linear_fwd / sparse_linear_bwd): W [N, M] in CSR, activations
// feature-major (xt [M, B]), so every nonzero is a vector operation over a slice of the batch. Schemas
// and math: csrc/ops.cpp; kernels: csrc/cpu/sparse_kernels.{h,cpp}; argument checks shared with CUDA:
// csrc/sparse_linear.h; CUDA: csrc/cuda/sparse_linear{.cu,_cuda.cpp}; the layer op and its autograd:
// csrc/sparse_linear.cpp; its transposes: transpose_2d (csrc/cpu/transpose.cpp).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "cpu/alloc.h"
#include "cpu/sparse_kernels.h"
#include "sparse_linear.h"

namespace ffops::cpu {
namespace {

using sparse::BwdArgs;
using sparse::FwdArgs;
using sparse::kChunk;

// A [rows, kChunk] zero-padded copy of the last `batch % kChunk` columns of m [rows, batch].
at::Tensor padded_tail(const at::Tensor& m, int64_t lanes) {
  const int64_t tail = m.size(1) % lanes;
  at::Tensor out = at::zeros({m.size(0), lanes}, m.options());
  out.narrow(1, 0, tail).copy_(m.narrow(1, m.size(1) - tail, tail));
  return out;
}

// ---- ops --------------------------------------------------------------------------------------

at::Tensor sparse_linear_fwd(const at::Tensor& xt, const at::Tensor& values, const at::Tensor& crow,
                             const at::Tensor& col, const std::optional<at::Tensor>& bias) {
  check_sparse_linear_fwd_args(xt, values, crow, col, bias);
  const auto dtype = xt.scalar_type();
  const int64_t n = crow.numel() - 1, batch = xt.size(1);

  at::Tensor yt = empty_large({n, batch}, xt.options());
  if (n == 0 || batch == 0) return yt;
  AT_DISPATCH_FLOATING_TYPES(dtype, "ffops_sparse_linear_fwd", [&] {
    constexpr int L = kChunk<scalar_t>;
    at::Tensor xt_tail, yt_tail;
    if (batch % L) {
      xt_tail = padded_tail(xt, L);
      yt_tail = at::empty({n, L}, xt.options());
    }
    auto run = [&](auto index) {
      using I = decltype(index);
      const FwdArgs<scalar_t, I> a{xt.const_data_ptr<scalar_t>(),
                                   values.const_data_ptr<scalar_t>(),
                                   crow.const_data_ptr<I>(),
                                   col.const_data_ptr<I>(),
                                   nullptr,
                                   bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
                                   yt.mutable_data_ptr<scalar_t>(),
                                   batch,
                                   sparse::panel_chunks(xt.size(0), 0.5),
                                   xt_tail.defined(),
                                   xt_tail.defined() ? xt_tail.const_data_ptr<scalar_t>() : nullptr,
                                   yt_tail.defined() ? yt_tail.mutable_data_ptr<scalar_t>() : nullptr};
      sparse::parallel_over_nnz(a.crow, n, batch, [&](int64_t r0, int64_t r1) { sparse::spmm_rows(a, r0, r1); });
    };
    if (crow.scalar_type() == at::kInt) {
      run(int32_t{});
    } else {
      run(int64_t{});
    }
    if (yt_tail.defined()) {
      const int64_t tail = batch % L;
      yt.narrow(1, batch - tail, tail).copy_(yt_tail.narrow(1, 0, tail));
    }
  });
  return yt;
}

std::tuple<at::Tensor, at::Tensor> sparse_linear_bwd(const at::Tensor& dyt, const at::Tensor& xt,
                                                     const at::Tensor& values, const at::Tensor& t_ptr,
                                                     const at::Tensor& t_row, const at::Tensor& t_perm, bool need_dx,
                                                     bool need_dvalues) {
  check_sparse_linear_bwd_args(dyt, xt, values, t_ptr, t_row, t_perm);
  const auto dtype = values.scalar_type();
  const int64_t nnz = values.size(0), m = xt.size(0), batch = xt.size(1);

  at::Tensor dxt = need_dx ? empty_large({m, batch}, xt.options()) : at::empty({0}, xt.options());
  at::Tensor dvalues = need_dvalues ? empty_large({nnz}, values.options()) : at::empty({0}, values.options());
  if (batch == 0 || nnz == 0 || (!need_dx && !need_dvalues)) {
    // Empty sums (dvalues over no samples, dx over no nonzeros) or nothing to compute.
    dxt.zero_();
    dvalues.zero_();
    return {dxt, dvalues};
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, "ffops_sparse_linear_bwd", [&] {
    constexpr int L = kChunk<scalar_t>;
    at::Tensor dyt_tail, xt_tail, dxt_tail, vt, dots;
    if (batch % L) {
      dyt_tail = padded_tail(dyt, L);
      xt_tail = padded_tail(xt, L);
      if (need_dx) dxt_tail = at::empty({m, L}, xt.options());
    }
    if (need_dx) vt = empty_large({nnz}, values.options());
    if (need_dvalues) dots = empty_large({nnz}, values.options());
    auto run = [&](auto index) {
      using I = decltype(index);
      auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
      const BwdArgs<scalar_t, I> a{dyt.const_data_ptr<scalar_t>(),
                                   xt.const_data_ptr<scalar_t>(),
                                   values.const_data_ptr<scalar_t>(),
                                   t_ptr.const_data_ptr<I>(),
                                   t_row.const_data_ptr<I>(),
                                   t_perm.const_data_ptr<I>(),
                                   nullptr,
                                   need_dx ? dxt.mutable_data_ptr<scalar_t>() : nullptr,
                                   ptr(vt),
                                   ptr(dots),
                                   need_dvalues ? dvalues.mutable_data_ptr<scalar_t>() : nullptr,
                                   batch,
                                   sparse::panel_chunks(dyt.size(0), 1.0),
                                   xt_tail.defined(),
                                   ptr(dyt_tail),
                                   ptr(xt_tail),
                                   ptr(dxt_tail)};
      sparse::parallel_over_nnz(a.ptr, m, batch, [&](int64_t j0, int64_t j1) { sparse::sddmm_cols(a, j0, j1); });
    };
    if (t_ptr.scalar_type() == at::kInt) {
      run(int32_t{});
    } else {
      run(int64_t{});
    }
    if (dxt_tail.defined()) {
      const int64_t tail = batch % L;
      dxt.narrow(1, batch - tail, tail).copy_(dxt_tail.narrow(1, 0, tail));
    }
  });
  return {dxt, dvalues};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("sparse_linear_fwd", &ffops::cpu::sparse_linear_fwd);
  m.impl("sparse_linear_bwd", &ffops::cpu::sparse_linear_bwd);
}
