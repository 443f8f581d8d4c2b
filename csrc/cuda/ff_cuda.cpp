// Forward-Forward operators on CUDA: the torch-facing side of csrc/cuda/ff.cu. Validates the
// raw-pointer contract (same checks as csrc/cpu/ff.cpp plus device placement), allocates the
// outputs and calls the launchers of cuda/ff.h on the current stream of h's device.
// Schemas and math: csrc/ops.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "cuda/torch_glue.h"
#include "cuda/ff.h"
#include "ff_checks.h"

namespace ffops::gpu {
namespace {

void check_rows(const at::Tensor& h, const char* name) {
  TORCH_CHECK(h.is_cuda(), "ffops: ", name, " must be a CUDA tensor, got ", h.device());
  ffops::check_rows(h, name);
}

at::Tensor goodness_fwd(const at::Tensor& h, double scale) {
  check_rows(h, "h");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor g = empty_stat(h);
  check_launch(launch_goodness_fwd(ffdtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1),
                                   h.stride(0), scale, g.mutable_data_ptr(), current_stream()),
               "goodness_fwd");
  return g;
}

at::Tensor row_scale(const at::Tensor& h, const at::Tensor& coef) {
  check_rows(h, "h");
  check_stat(coef, h, "coef");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor out = at::empty(h.sizes(), h.options());
  check_launch(launch_row_scale(ffdtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1), h.stride(0),
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
  check_launch(launch_ff_loss_fwd(ffdtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1), h.stride(0),
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
  check_launch(launch_normalize_fwd(ffdtype_of(h.scalar_type()), h.const_data_ptr(), h.size(0), h.size(1),
                                    h.stride(0), norm_scale, eps, y.mutable_data_ptr(), s.mutable_data_ptr(),
                                    current_stream()),
               "normalize_fwd");
  return {y, s};
}

at::Tensor normalize_bwd(const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_s, const at::Tensor& h,
                         const at::Tensor& s, double norm_scale, double eps) {
  check_rows(h, "h");
  check_rows(grad_y, "grad_y");
  TORCH_CHECK(grad_y.device() == h.device(), "ffops: grad_y must be on ", h.device(), ", got ", grad_y.device());
  TORCH_CHECK(grad_y.sizes() == h.sizes() && grad_y.scalar_type() == h.scalar_type(),
              "ffops: grad_y must match h, got ", grad_y.sizes(), " ", grad_y.scalar_type(), " vs ", h.sizes(),
              " ", h.scalar_type());
  check_stat(s, h, "s");
  if (grad_s.has_value()) check_stat(*grad_s, h, "grad_s");
  const c10::cuda::CUDAGuard guard(h.device());
  at::Tensor dh = at::empty(h.sizes(), h.options());
  check_launch(launch_normalize_bwd(ffdtype_of(h.scalar_type()), grad_y.const_data_ptr(), grad_y.stride(0),
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
