// Sparse linear layer on CUDA (sparse_linear_fwd / sparse_linear_bwd): the torch-facing side of
// csrc/cuda/sparse_linear.cu. Validates the raw-pointer contract with the checks shared with the CPU
// kernels csrc/cpu/sparse_linear.cpp (csrc/sparse_linear.h: shapes, dtypes, contiguity, devices; the
// pattern's contents were validated where it was made, ffops/sparse/pattern.py), allocates the
// outputs and the backward's workspace, and launches on the current stream of the tensors' device.
// Schemas and math: csrc/ops.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "../sparse_linear.h"  // csrc/sparse_linear.h: the checks shared with the CPU kernels
#include "cuda/sparse_linear.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

// The kernels' index type of a pointer array (int32 or int64, checked by csrc/sparse_linear.h).
SparseIndex index_dtype(const at::Tensor& t) {
  return t.scalar_type() == at::kInt ? SparseIndex::i32 : SparseIndex::i64;
}

const void* opt_ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? t->const_data_ptr() : nullptr; }

// yt [N, B]; see sparse_linear_fwd in csrc/ops.cpp.
at::Tensor sparse_linear_fwd(const at::Tensor& xt, const at::Tensor& values, const at::Tensor& crow,
                             const at::Tensor& col, const std::optional<at::Tensor>& bias) {
  check_sparse_linear_fwd_args(xt, values, crow, col, bias);
  const SparseIndex index = index_dtype(crow);
  const int64_t N = crow.size(0) - 1;
  const int64_t B = xt.size(1);

  const c10::cuda::CUDAGuard guard(xt.device());
  at::Tensor yt = at::empty({N, B}, xt.options());
  check_launch(launch_sparse_linear_fwd(dtype_of(xt.scalar_type(), "xt"), index, xt.const_data_ptr(), B,
                                        values.const_data_ptr(), crow.const_data_ptr(), col.const_data_ptr(), N,
                                        opt_ptr(bias), yt.mutable_data_ptr(), current_stream()),
               "sparse_linear_fwd");
  return yt;
}

// (dxt [M, B] or [0], dvalues [nnz] or [0]); see sparse_linear_bwd in csrc/ops.cpp.
std::tuple<at::Tensor, at::Tensor> sparse_linear_bwd(const at::Tensor& dyt, const at::Tensor& xt,
                                                     const at::Tensor& values, const at::Tensor& t_ptr,
                                                     const at::Tensor& t_row, const at::Tensor& t_perm, bool need_dx,
                                                     bool need_dvalues) {
  check_sparse_linear_bwd_args(dyt, xt, values, t_ptr, t_row, t_perm);
  const SparseIndex index = index_dtype(t_ptr);
  const int64_t M = xt.size(0);
  const int64_t B = xt.size(1);
  const int64_t nnz = values.size(0);

  const c10::cuda::CUDAGuard guard(dyt.device());
  at::Tensor dxt = need_dx ? at::empty({M, B}, dyt.options()) : at::empty({0}, dyt.options());
  at::Tensor dvalues = need_dvalues ? at::empty({nnz}, values.options()) : at::empty({0}, values.options());
  if (!need_dx && !need_dvalues) return {dxt, dvalues};
  const DType dtype = dtype_of(dyt.scalar_type(), "dyt");
  void* dxt_ptr = need_dx ? dxt.mutable_data_ptr() : nullptr;
  // Partial dots of the batch slices (see sparse_linear.cu); allocated through torch's caching allocator.
  const int64_t ws_n =
      sparse_linear_bwd_workspace(dtype, dyt.const_data_ptr(), xt.const_data_ptr(), dxt_ptr, M, B, nnz, need_dvalues);
  at::Tensor ws;
  if (ws_n > 0) ws = at::empty({ws_n}, dyt.options().dtype(stat_type(dyt.scalar_type())));
  check_launch(
      launch_sparse_linear_bwd(dtype, index, dyt.const_data_ptr(), xt.const_data_ptr(), M, B, values.const_data_ptr(),
                               nnz, t_ptr.const_data_ptr(), t_row.const_data_ptr(), t_perm.const_data_ptr(), dxt_ptr,
                               need_dvalues ? dvalues.mutable_data_ptr() : nullptr,
                               ws.defined() ? ws.mutable_data_ptr() : nullptr, current_stream()),
      "sparse_linear_bwd");
  return {dxt, dvalues};
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("sparse_linear_fwd", &ffops::gpu::sparse_linear_fwd);
  m.impl("sparse_linear_bwd", &ffops::gpu::sparse_linear_bwd);
}
