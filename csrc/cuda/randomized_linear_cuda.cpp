// The random sketch S^T a of the randomized linear op on CUDA (rmm_sketch; schema in csrc/ops.cpp):
// the rows are taken in blocks, each block's S^T [k, R] is generated on the device
// (csrc/cuda/randomized_linear.cu) into a buffer of about 4M values and multiplied by cuBLAS
// (addmm, in the compute type, as torch's own float32 matmul settings say), so S is never whole.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>

#include "../randomized_linear.h"  // csrc/randomized_linear.h: the hash and the checks shared with the CPU kernel
#include "cuda/randomized_linear.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

at::Tensor rmm_sketch(const at::Tensor& a, const at::Tensor& seed_t, int64_t k, int64_t kind) {
  check_cuda(a, "a");
  rmm::check_rmm_sketch_args(a, seed_t, k, kind);
  const auto seed = static_cast<uint64_t>(seed_t.item<int64_t>());
  const c10::cuda::CUDAGuard guard(a.device());
  const bool is_double = a.scalar_type() == at::kDouble;
  const at::ScalarType acc = is_double ? at::kDouble : at::kFloat;
  const int64_t rows = a.size(0);
  at::Tensor out = at::zeros({k, a.size(1)}, a.options().dtype(acc));
  if (rows == 0 || a.size(1) == 0) return out.to(a.scalar_type());
  const int64_t block = std::min<int64_t>(rows, std::max<int64_t>(256, (int64_t(1) << 22) / k));
  at::Tensor tile = at::empty({k, block}, a.options().dtype(acc));
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r = std::min(block, rows - r0);
    check_launch(launch_rmm_fill(is_double, tile.mutable_data_ptr(), block, k, r0, r, seed, static_cast<int>(kind),
                                 current_stream()),
                 "rmm_sketch");
    out.addmm_(tile.narrow(1, 0, r), a.narrow(0, r0, r).to(acc));
  }
  return out.to(a.scalar_type());
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) { m.impl("rmm_sketch", &ffops::gpu::rmm_sketch); }
