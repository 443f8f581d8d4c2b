// The MS norms on CUDA (ms_norm_fwd, ms_norm_bwd): the torch-facing side of csrc/cuda/ms_norm.cu.
// Validates the raw-pointer contract (the checks of csrc/common.h and csrc/ms_norm.h, as the CPU
// kernels csrc/cpu/ms_norm.cpp, plus device placement), allocates the outputs and calls the
// launchers of cuda/ms_norm.h on the current stream of the input's device. Schemas and math:
// csrc/ops.cpp; C++ autograd: csrc/ms_norm.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "../ms_norm.h"  // csrc/ms_norm.h: the checks shared with the CPU kernels
#include "cuda/ms_norm.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

std::tuple<at::Tensor, at::Tensor> ms_norm_fwd(const at::Tensor& x, double eps, bool center,
                                               std::optional<at::ScalarType> out_dtype) {
  check_cuda(x, "x");
  const at::Tensor xr = as_rows(x);  // x [..., K] as rows; y and rstd keep x's leading shape
  check_rows(xr, "x");
  const at::ScalarType ot = ms_out_type(x, out_dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().dtype(ot));
  at::Tensor rstd = empty_row_stat(x);
  check_launch(
      launch_ms_norm_fwd(dtype_of(x.scalar_type()), dtype_of(ot), xr.const_data_ptr(), xr.size(0), xr.size(1),
                         xr.stride(0), eps, center, y.mutable_data_ptr(), rstd.mutable_data_ptr(), current_stream()),
      "ms_norm_fwd");
  return {y, rstd};
}

at::Tensor ms_norm_bwd(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& rstd, bool center,
                       at::ScalarType dx_dtype) {
  check_cuda(y, "y");
  const auto [gr_rows, y_rows] = check_ms_norm_bwd_args(grad_y, y, rstd, dx_dtype);
  const c10::cuda::CUDAGuard guard(y.device());
  at::Tensor dx = at::empty(y.sizes(), y.options().dtype(dx_dtype));
  check_launch(launch_ms_norm_bwd(dtype_of(y.scalar_type()), dtype_of(dx_dtype), gr_rows.const_data_ptr(),
                                  gr_rows.stride(0), y.const_data_ptr(), rstd.const_data_ptr(), y_rows.size(0),
                                  y_rows.size(1), center, dx.mutable_data_ptr(), current_stream()),
               "ms_norm_bwd");
  return dx;
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("ms_norm_fwd", &ffops::gpu::ms_norm_fwd);
  m.impl("ms_norm_bwd", &ffops::gpu::ms_norm_bwd);
}
