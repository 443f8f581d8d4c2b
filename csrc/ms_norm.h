// Argument checks of the MS norms (ms_norm_fwd / ms_norm_bwd; schemas in csrc/ops.cpp) beyond
// those of csrc/common.h, shared by their CPU registration (csrc/cpu/ms_norm.cpp) and CUDA
// registration (csrc/cuda/ms_norm_cuda.cpp). Their C++ autograd is csrc/ms_norm.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <utility>

#include "common.h"

namespace ffops {

// The dtype of an MS-norm output: out_dtype, or x's dtype. float64 stays float64 (and only goes to float64).
inline at::ScalarType ms_out_type(const at::Tensor& x, std::optional<at::ScalarType> out_dtype) {
  const at::ScalarType t = out_dtype.value_or(x.scalar_type());
  const bool x64 = x.scalar_type() == at::kDouble, o64 = t == at::kDouble;
  TORCH_CHECK(x64 == o64 && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble),
              "ffops: out_dtype must be float32, float16 or bfloat16 (float64 only for float64 x), got ", t,
              " for x of ", x.scalar_type());
  return t;
}

// grad_y and y: [..., K] (y contiguous, grad_y 2-D with unit last stride or contiguous), rstd one value
// per row. Returns the rows of grad_y and y (as_rows), which the kernels run on.
inline std::pair<at::Tensor, at::Tensor> check_ms_norm_bwd_args(const at::Tensor& grad_y, const at::Tensor& y,
                                                                const at::Tensor& rstd, at::ScalarType dx_dtype) {
  TORCH_CHECK(y.dim() >= 1 && y.is_contiguous(), "ffops: y must be a contiguous tensor of at least 1 dimension");
  TORCH_CHECK(grad_y.device() == y.device(), "ffops: grad_y must be on ", y.device(), ", got ", grad_y.device());
  TORCH_CHECK(grad_y.sizes() == y.sizes() && grad_y.scalar_type() == y.scalar_type(),
              "ffops: grad_y must match y, got ", grad_y.sizes(), " ", grad_y.scalar_type(), " vs ", y.sizes(), " ",
              y.scalar_type());
  at::Tensor grad_rows = as_rows(grad_y), y_rows = as_rows(y);
  check_rows(grad_rows, "grad_y");
  check_rows(y_rows, "y");
  TORCH_CHECK(rstd.numel() == y_rows.size(0) && rstd.is_contiguous(), "ffops: rstd must be a contiguous tensor of ",
              y_rows.size(0), " per-row values, got ", rstd.sizes());
  check_stat(rstd.view({y_rows.size(0)}), y_rows, "rstd");
  TORCH_CHECK(
      (dx_dtype == at::kDouble) == (y.scalar_type() == at::kDouble) &&
          (dx_dtype == at::kFloat || dx_dtype == at::kHalf || dx_dtype == at::kBFloat16 || dx_dtype == at::kDouble),
      "ffops: dx_dtype must be float32, float16 or bfloat16 (float64 only with float64 y), got ", dx_dtype);
  return {grad_rows, y_rows};
}

}  // namespace ffops
