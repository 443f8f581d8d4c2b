// The packed-code activations on CUDA (packed_act_fwd, packed_act_bwd): the torch-facing side of
// csrc/cuda/packed_act.cu. Validates the raw-pointer contract (the checks of csrc/packed_act.h, as
// the CPU kernels csrc/cpu/packed_act.cpp, plus device placement), allocates the outputs and calls
// the launchers of cuda/packed_act.h on the current stream of the input's device. Schemas and math:
// csrc/ops.cpp; C++ autograd: csrc/packed_act.cpp.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <tuple>

#include "../packed_act.h"  // csrc/packed_act.h: the checks shared with the CPU kernels
#include "cuda/packed_act.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

std::tuple<at::Tensor, at::Tensor> packed_act_fwd(const at::Tensor& x, int64_t fn, at::ArrayRef<double> borders,
                                                  at::ArrayRef<double> levels, int64_t bits) {
  check_cuda(x, "x");
  check_packed_act_args(x, "x", fn, borders, levels, bits);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor codes = at::empty({packed_nbytes(x.numel(), bits)}, x.options().dtype(at::kByte));
  check_launch(launch_packed_act_fwd(dtype_of(x.scalar_type()), x.const_data_ptr(), x.numel(), static_cast<int>(fn),
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
  check_launch(launch_packed_act_bwd(dtype_of(grad_y.scalar_type()), grad_y.const_data_ptr(),
                                     codes.const_data_ptr<uint8_t>(), grad_y.numel(), levels.data(),
                                     static_cast<int>(bits), dx.mutable_data_ptr(), current_stream()),
               "packed_act_bwd");
  return dx;
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("packed_act_fwd", &ffops::gpu::packed_act_fwd);
  m.impl("packed_act_bwd", &ffops::gpu::packed_act_bwd);
}
