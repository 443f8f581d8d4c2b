// Argument checks of the sparse linear layer (sparse_linear_fwd / sparse_linear_bwd; schemas in
// csrc/ops.cpp), written once for its CPU registration (csrc/cpu/sparse_linear.cpp) and CUDA
// registration (csrc/cuda/sparse_linear_cuda.cpp): shapes, dtypes, contiguity and devices. The
// pattern's contents were validated where it was made (ffops/sparse/pattern.py); only on the CPU,
// where it costs no device synchronization, are the pointer arrays' end points checked again. The
// layer's op and autograd: csrc/sparse_linear.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>

#include "common.h"

namespace ffops {
namespace sparse_checks {

inline constexpr const char* kFwd = "ffops.sparse_linear_fwd: ";
inline constexpr const char* kBwd = "ffops.sparse_linear_bwd: ";

// t is on `device` (the device of the op's first activation).
inline void check_device(const at::Tensor& t, const char* op, const char* name, const at::Device& device) {
  TORCH_CHECK(t.device() == device, op, name, " must be on ", device, ", got ", t.device());
}

// The data dtypes of the kernels: float32 / float64 on the CPU, also float16 / bfloat16 on CUDA.
inline void check_value_dtype(const at::Tensor& t, const char* op, const char* name) {
  const at::ScalarType s = t.scalar_type();
  if (t.is_cuda()) {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16, op, name,
                " must be float32, float64, float16 or bfloat16 on CUDA, got ", s);
  } else {
    TORCH_CHECK(s == at::kFloat || s == at::kDouble, op, name, " must be float32 or float64 on the CPU, got ", s);
  }
}

// A contiguous [rows, batch] (feature-major) matrix on `device` of a data dtype.
inline void check_matrix(const at::Tensor& t, const char* op, const char* name, const char* rows,
                         const at::Device& device) {
  check_device(t, op, name, device);
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous(), op, name, " must be a contiguous [", rows, ", batch] matrix, got ",
              t.sizes(), t.dim() == 2 ? " (not contiguous)" : "");
  check_value_dtype(t, op, name);
}

// A contiguous [len] vector on `device` of the given dtype.
inline void check_vector(const at::Tensor& t, const char* op, const char* name, int64_t len, at::ScalarType dtype,
                         const at::Device& device) {
  check_device(t, op, name, device);
  TORCH_CHECK(t.dim() == 1 && t.size(0) == len && t.is_contiguous(), op, name, " must be a contiguous [", len,
              "] vector, got shape ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, name, " must be ", dtype, ", got ", t.scalar_type());
}

// values: a contiguous 1-D tensor (nnz entries) on `device`.
inline void check_values(const at::Tensor& values, const char* op, const at::Device& device) {
  check_device(values, op, "values", device);
  TORCH_CHECK(values.dim() == 1 && values.is_contiguous(), op, "values must be a contiguous 1-D tensor, got shape ",
              values.sizes());
}

// ptr [n + 1] (int32 / int64, contiguous, on `device`) of offsets from 0 to nnz (the end points are
// read only on the CPU).
inline void check_ptr(const at::Tensor& ptr, const char* op, const char* name, int64_t nnz, const at::Device& device) {
  check_device(ptr, op, name, device);
  TORCH_CHECK(ptr.scalar_type() == at::kInt || ptr.scalar_type() == at::kLong, op, name,
              " must be int32 or int64, got ", ptr.scalar_type());
  TORCH_CHECK(ptr.dim() == 1 && ptr.size(0) >= 1 && ptr.is_contiguous(), op, name,
              " must be a contiguous 1-D tensor of n + 1 offsets, got shape ", ptr.sizes());
  if (ptr.is_cpu()) {
    const int64_t n = ptr.size(0) - 1;
    const bool i32 = ptr.scalar_type() == at::kInt;
    const int64_t first = i32 ? ptr.const_data_ptr<int32_t>()[0] : ptr.const_data_ptr<int64_t>()[0];
    const int64_t last = i32 ? ptr.const_data_ptr<int32_t>()[n] : ptr.const_data_ptr<int64_t>()[n];
    TORCH_CHECK(first == 0 && last == nnz, op, name, " must run from 0 to nnz = ", nnz, ", got ", first, " ... ", last);
  }
}

}  // namespace sparse_checks

// sparse_linear_fwd's arguments: xt [in_features, batch]; values [nnz] of xt's dtype; crow [N + 1]
// and col [nnz] int32 / int64 (one dtype); bias [N] of xt's dtype or None; all on xt's device.
inline void check_sparse_linear_fwd_args(const at::Tensor& xt, const at::Tensor& values, const at::Tensor& crow,
                                         const at::Tensor& col, const std::optional<at::Tensor>& bias) {
  using namespace sparse_checks;
  const at::Device device = xt.device();
  check_matrix(xt, kFwd, "xt", "in_features", device);
  const at::ScalarType dtype = xt.scalar_type();
  check_values(values, kFwd, device);
  TORCH_CHECK(values.scalar_type() == dtype, kFwd, "values must have the dtype of xt (", dtype, "), got ",
              values.scalar_type());
  const int64_t nnz = values.size(0);
  check_ptr(crow, kFwd, "crow", nnz, device);
  check_vector(col, kFwd, "col", nnz, crow.scalar_type(), device);
  if (bias.has_value()) check_vector(*bias, kFwd, "bias", crow.size(0) - 1, dtype, device);
}

// sparse_linear_bwd's arguments: dyt [out_features, batch] and xt [in_features, batch] of values'
// dtype; values [nnz]; t_ptr [in_features + 1], t_row and t_perm [nnz] int32 / int64 (one dtype);
// all on dyt's device.
inline void check_sparse_linear_bwd_args(const at::Tensor& dyt, const at::Tensor& xt, const at::Tensor& values,
                                         const at::Tensor& t_ptr, const at::Tensor& t_row, const at::Tensor& t_perm) {
  using namespace sparse_checks;
  const at::Device device = dyt.device();
  check_matrix(dyt, kBwd, "dyt", "out_features", device);
  check_matrix(xt, kBwd, "xt", "in_features", device);
  check_values(values, kBwd, device);
  check_value_dtype(values, kBwd, "values");
  const at::ScalarType dtype = values.scalar_type();
  TORCH_CHECK(dyt.scalar_type() == dtype && xt.scalar_type() == dtype, kBwd,
              "dyt and xt must have the dtype of values (", dtype, "), got ", dyt.scalar_type(), " and ",
              xt.scalar_type());
  TORCH_CHECK(dyt.size(1) == xt.size(1), kBwd, "dyt [out_features, batch] and xt [in_features, batch] must have ",
              "one batch size, got ", dyt.sizes(), " and ", xt.sizes());
  const int64_t nnz = values.size(0), m = xt.size(0);
  check_ptr(t_ptr, kBwd, "t_ptr", nnz, device);
  TORCH_CHECK(t_ptr.size(0) == m + 1, kBwd, "t_ptr must have in_features + 1 = ", m + 1, " entries, got ",
              t_ptr.size(0));
  check_vector(t_row, kBwd, "t_row", nnz, t_ptr.scalar_type(), device);
  check_vector(t_perm, kBwd, "t_perm", nnz, t_ptr.scalar_type(), device);
}

}  // namespace ffops
