// Sparse linear layer on CUDA: the torch-facing side of csrc/cuda/sparse.cu. Validates the
// raw-pointer contract (shapes, dtypes, contiguity, devices; the pattern's contents were validated
// where it was made, ffops/sparse/pattern.py), allocates the outputs and the backward's workspace,
// and launches on the current stream of the tensors' device. Schemas and math: csrc/ops.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "cuda/torch_glue.h"
#include "cuda/sparse.h"
#include "ff_checks.h"

namespace ffops::gpu {
namespace {

void check_device(const at::Tensor& t, const at::Tensor& ref, const char* name, const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "ffops: ", name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
}

// A contiguous 2-D dense CUDA matrix of `rows` rows (-1: any) of a supported dtype.
void check_dense(const at::Tensor& t, int64_t rows, const char* name) {
  TORCH_CHECK(t.is_cuda(), "ffops: ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.dim() == 2, "ffops: ", name, " must be 2-D (feature-major [features, batch]), got ", t.dim(), "-D");
  TORCH_CHECK(rows < 0 || t.size(0) == rows, "ffops: ", name, " must have ", rows, " rows, got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "ffops: ", name, " must be contiguous, got strides ", t.strides());
  ffdtype_of(t.scalar_type(), name);
}

// A contiguous vector of n entries (-1: any) on ref's device.
void check_vec(const at::Tensor& t, int64_t n, const at::Tensor& ref, const char* name, const char* ref_name) {
  check_device(t, ref, name, ref_name);
  TORCH_CHECK(t.dim() == 1, "ffops: ", name, " must be 1-D, got ", t.dim(), "-D");
  TORCH_CHECK(n < 0 || t.size(0) == n, "ffops: ", name, " must have ", n, " entries, got ", t.size(0));
  TORCH_CHECK(t.is_contiguous(), "ffops: ", name, " must be contiguous");
}

void check_dtype(const at::Tensor& t, at::ScalarType dtype, const char* name, const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == dtype, "ffops: ", name, " must have the dtype of ", ref_name, " (", dtype,
              "), got ", t.scalar_type());
}

SparseIndex index_dtype(const at::Tensor& t, const char* name) {
  if (t.scalar_type() == at::kInt) return SparseIndex::i32;
  if (t.scalar_type() == at::kLong) return SparseIndex::i64;
  TORCH_CHECK(false, "ffops: ", name, " must be int32 or int64, got ", t.scalar_type());
  return SparseIndex::i32;  // unreachable
}

const void* opt_ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? t->const_data_ptr() : nullptr; }

// yt [N, B]; see sparse_linear_fwd in csrc/ops.cpp.
at::Tensor sparse_linear_fwd(const at::Tensor& xt, const at::Tensor& values, const at::Tensor& crow,
                             const at::Tensor& col, const std::optional<at::Tensor>& bias) {
  check_dense(xt, -1, "xt");
  check_vec(values, -1, xt, "values", "xt");
  check_dtype(values, xt.scalar_type(), "values", "xt");
  const int64_t nnz = values.size(0);
  check_vec(crow, -1, xt, "crow", "xt");
  TORCH_CHECK(crow.size(0) >= 1, "ffops: crow must have N + 1 >= 1 entries, got 0");
  const SparseIndex index = index_dtype(crow, "crow");
  check_vec(col, nnz, xt, "col", "xt");
  check_dtype(col, crow.scalar_type(), "col", "crow");
  const int64_t N = crow.size(0) - 1;
  if (bias.has_value()) {
    check_vec(*bias, N, xt, "bias", "xt");
    check_dtype(*bias, xt.scalar_type(), "bias", "xt");
  }
  const int64_t B = xt.size(1);

  const c10::cuda::CUDAGuard guard(xt.device());
  at::Tensor yt = at::empty({N, B}, xt.options());
  check_launch(launch_sparse_linear_fwd(ffdtype_of(xt.scalar_type(), "xt"), index, xt.const_data_ptr(), B,
                                        values.const_data_ptr(), crow.const_data_ptr(), col.const_data_ptr(), N,
                                        opt_ptr(bias), yt.mutable_data_ptr(),
                                        current_stream()),
               "sparse_linear_fwd");
  return yt;
}

// (dxt [M, B] or [0], dvalues [nnz] or [0]); see sparse_linear_bwd in csrc/ops.cpp.
std::tuple<at::Tensor, at::Tensor> sparse_linear_bwd(const at::Tensor& dyt, const at::Tensor& xt,
                                                     const at::Tensor& values, const at::Tensor& t_ptr,
                                                     const at::Tensor& t_row, const at::Tensor& t_perm, bool need_dx,
                                                     bool need_dvalues) {
  check_dense(dyt, -1, "dyt");
  check_dense(xt, -1, "xt");
  check_device(xt, dyt, "xt", "dyt");
  check_dtype(xt, dyt.scalar_type(), "xt", "dyt");
  TORCH_CHECK(xt.size(1) == dyt.size(1), "ffops: xt and dyt must have one batch size, got xt ", xt.sizes(),
              " and dyt ", dyt.sizes());
  check_vec(values, -1, dyt, "values", "dyt");
  check_dtype(values, dyt.scalar_type(), "values", "dyt");
  const int64_t M = xt.size(0);
  const int64_t B = xt.size(1);
  const int64_t nnz = values.size(0);
  check_vec(t_ptr, M + 1, dyt, "t_ptr", "dyt");
  const SparseIndex index = index_dtype(t_ptr, "t_ptr");
  check_vec(t_row, nnz, dyt, "t_row", "dyt");
  check_dtype(t_row, t_ptr.scalar_type(), "t_row", "t_ptr");
  check_vec(t_perm, nnz, dyt, "t_perm", "dyt");
  check_dtype(t_perm, t_ptr.scalar_type(), "t_perm", "t_ptr");

  const c10::cuda::CUDAGuard guard(dyt.device());
  at::Tensor dxt = need_dx ? at::empty({M, B}, dyt.options()) : at::empty({0}, dyt.options());
  at::Tensor dvalues = need_dvalues ? at::empty({nnz}, values.options()) : at::empty({0}, values.options());
  if (!need_dx && !need_dvalues) return {dxt, dvalues};
  const FFDtype dtype = ffdtype_of(dyt.scalar_type(), "dyt");
  void* dxt_ptr = need_dx ? dxt.mutable_data_ptr() : nullptr;
  // Partial dots of the batch slices (see sparse.cu); allocated through torch's caching allocator.
  const int64_t ws_n =
      sparse_linear_bwd_workspace(dtype, dyt.const_data_ptr(), xt.const_data_ptr(), dxt_ptr, M, B, nnz, need_dvalues);
  at::Tensor ws;
  if (ws_n > 0) ws = at::empty({ws_n}, dyt.options().dtype(stat_type(dyt.scalar_type())));
  check_launch(launch_sparse_linear_bwd(dtype, index, dyt.const_data_ptr(), xt.const_data_ptr(), M, B,
                                        values.const_data_ptr(), nnz, t_ptr.const_data_ptr(), t_row.const_data_ptr(),
                                        t_perm.const_data_ptr(), dxt_ptr,
                                        need_dvalues ? dvalues.mutable_data_ptr() : nullptr,
                                        ws.defined() ? ws.mutable_data_ptr() : nullptr,
                                        current_stream()),
               "sparse_linear_bwd");
  return {dxt, dvalues};
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("sparse_linear_fwd", &ffops::gpu::sparse_linear_fwd);
  m.impl("sparse_linear_bwd", &ffops::gpu::sparse_linear_bwd);
}
