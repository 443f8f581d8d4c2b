// The goodness ops on CUDA (goodness_fwd, row_scale, ff_loss_fwd, normalize_fwd, normalize_bwd): the
// torch-facing side of csrc/cuda/goodness.cu. Validates the raw-pointer contract (the checks of
// csrc/common.h and csrc/goodness.h, as the CPU kernels csrc/cpu/goodness.cpp, plus device placement),
// allocates the outputs and calls the launchers of cuda/goodness.h on the current stream of h's device.
// Their C++ autograd is csrc/goodness.cpp.
// Schemas and math: csrc/ops.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "../goodness.h"  // csrc/goodness.h: the checks shared with the CPU kernels
#include "cuda/goodness.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

void check_rows(const at::Tensor& h, const char* name) {
  check_cuda(h, name);
  ffops::check_rows(h, name);
}

at::Tensor goodness_fwd(const at::Tensor& h, double scale) {
  check_rows(h, "h");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor g = empty_stat(h);
  check_launch(launch_goodness_fwd(dtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1), h.stride(0),
                                   scale, g.mutable_data_ptr(), current_stream()),
               "goodness_fwd");
  return g;
}

at::Tensor row_scale(const at::Tensor& h, const at::Tensor& coef) {
  check_rows(h, "h");
  check_stat(coef, h, "coef");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor out = at::empty(h.sizes(), h.options());
  check_launch(launch_row_scale(dtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1), h.stride(0),
                                coef.const_data_ptr(), out.mutable_data_ptr(), current_stream()),
               "row_scale");
  return out;
}

std::tuple<at::Tensor, at::Tensor> ff_loss_fwd(const at::Tensor& h, double scale, double coef, double theta,
                                               const std::optional<at::Tensor>& target) {
  check_rows(h, "h");
  if (target.has_value()) check_stat(*target, h, "target");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor g = empty_stat(h);
  at::Tensor loss = empty_stat(h);
  check_launch(launch_ff_loss_fwd(dtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1), h.stride(0),
                                  scale, coef, theta, target.has_value() ? target->const_data_ptr() : nullptr,
                                  g.mutable_data_ptr(), loss.mutable_data_ptr(), current_stream()),
               "ff_loss_fwd");
  return {g, loss};
}

std::tuple<at::Tensor, at::Tensor> normalize_fwd(const at::Tensor& h, double norm_scale, double eps) {
  check_rows(h, "h");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor y = at::empty(h.sizes(), h.options());
  at::Tensor s = empty_stat(h);
  check_launch(launch_normalize_fwd(dtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1), h.stride(0),
                                    norm_scale, eps, y.mutable_data_ptr(), s.mutable_data_ptr(), current_stream()),
               "normalize_fwd");
  return {y, s};
}

at::Tensor normalize_bwd(const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_s, const at::Tensor& h,
                         const at::Tensor& s, double norm_scale, double eps) {
  check_cuda(h, "h");
  check_cuda(grad_y, "grad_y");
  check_normalize_bwd_args(grad_y, grad_s, h, s);
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor dh = at::empty(h.sizes(), h.options());
  check_launch(launch_normalize_bwd(dtype_of(h.scalar_type()), grad_y.const_data_ptr(), grad_y.stride(0),
                                    grad_s.has_value() ? grad_s->const_data_ptr() : nullptr, h.const_data_ptr(),
                                    h.stride(0), s.const_data_ptr(), h.size(0), h.size(1), norm_scale, eps,
                                    dh.mutable_data_ptr(), current_stream()),
               "normalize_bwd");
  return dh;
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("goodness_fwd", &ffops::gpu::goodness_fwd);
  m.impl("row_scale", &ffops::gpu::row_scale);
  m.impl("ff_loss_fwd", &ffops::gpu::ff_loss_fwd);
  m.impl("normalize_fwd", &ffops::gpu::normalize_fwd);
  m.impl("normalize_bwd", &ffops::gpu::normalize_bwd);
}
