// Memory-saving operators on CUDA: the torch-facing side of csrc/cuda/memory.cu. Validates the
// raw-pointer contract (the checks of csrc/memory_checks.h plus device placement), allocates the
// outputs and calls the launchers of cuda/memory.h on the current stream of the input's device.
// Schemas and math: csrc/ops.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "cuda/torch_glue.h"
#include "cuda/memory.h"
#include "memory_checks.h"

namespace ffops::gpu {
namespace {

constexpr int64_t kNumFns = 8;

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "ffops: ", name, " must be a CUDA tensor, got ", t.device());
}

std::tuple<at::Tensor, at::Tensor> packed_act_fwd(const at::Tensor& x, int64_t fn, at::ArrayRef<double> borders,
                                                  at::ArrayRef<double> levels, int64_t bits) {
  check_cuda(x, "x");
  check_packed_act_args(x, "x", fn, borders, levels, bits, kNumFns);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor codes = at::empty({packed_nbytes(x.numel(), bits)}, x.options().dtype(at::kByte));
  check_launch(launch_packed_act_fwd(ffdtype_of(x.scalar_type()), x.const_data_ptr(), x.numel(), static_cast<int>(fn),
                                     borders.data(), static_cast<int>(bits), y.mutable_data_ptr(),
                                     codes.mutable_data_ptr<uint8_t>(), current_stream()),
               "packed_act_fwd");
  return {y, codes};
}

at::Tensor packed_act_bwd(const at::Tensor& grad_y, const at::Tensor& codes, at::ArrayRef<double> levels,
                          int64_t bits) {
  check_cuda(grad_y, "grad_y");
  check_packed_act_bwd_args(grad_y, codes, levels, bits);
  const c10::cuda::CUDAGuard guard(grad_y.device());
  at::Tensor dx = at::empty(grad_y.sizes(), grad_y.options());
  check_launch(launch_packed_act_bwd(ffdtype_of(grad_y.scalar_type()), grad_y.const_data_ptr(),
                                     codes.const_data_ptr<uint8_t>(), grad_y.numel(), levels.data(),
                                     static_cast<int>(bits), dx.mutable_data_ptr(), current_stream()),
               "packed_act_bwd");
  return dx;
}

std::tuple<at::Tensor, at::Tensor> ms_norm_fwd(const at::Tensor& x, double eps, bool center,
                                               std::optional<at::ScalarType> out_dtype) {
  check_cuda(x, "x");
  check_rows(x, "x");
  const at::ScalarType ot = ms_out_type(x, out_dtype);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options().dtype(ot));
  at::Tensor rstd = empty_stat(x);
  check_launch(launch_ms_norm_fwd(ffdtype_of(x.scalar_type()), ffdtype_of(ot), x.const_data_ptr(), x.size(0), x.size(1),
                                  x.stride(0), eps, center, y.mutable_data_ptr(), rstd.mutable_data_ptr(),
                                  current_stream()),
               "ms_norm_fwd");
  return {y, rstd};
}

at::Tensor ms_norm_bwd(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& rstd, bool center,
                       at::ScalarType dx_dtype) {
  check_cuda(y, "y");
  check_ms_norm_bwd_args(grad_y, y, rstd, dx_dtype);
  const c10::cuda::CUDAGuard guard(y.device());
  at::Tensor dx = at::empty(y.sizes(), y.options().dtype(dx_dtype));
  check_launch(launch_ms_norm_bwd(ffdtype_of(y.scalar_type()), ffdtype_of(dx_dtype), grad_y.const_data_ptr(),
                                  grad_y.stride(0), y.const_data_ptr(), rstd.const_data_ptr(), y.size(0), y.size(1),
                                  center, dx.mutable_data_ptr(), current_stream()),
               "ms_norm_bwd");
  return dx;
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("packed_act_fwd", &ffops::gpu::packed_act_fwd);
  m.impl("packed_act_bwd", &ffops::gpu::packed_act_bwd);
  m.impl("ms_norm_fwd", &ffops::gpu::ms_norm_fwd);
  m.impl("ms_norm_bwd", &ffops::gpu::ms_norm_bwd);
}
