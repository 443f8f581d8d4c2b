// The cwc_block ops on CUDA (cwc_block_fwd, cwc_block_bwd): the torch-facing side of
// csrc/cuda/cwc_block.cu. Validates the raw-pointer contract (csrc/cwc_block.h, as the CPU kernels
// csrc/cpu/cwc_block.cpp, plus device placement), allocates the outputs, runs the kernels' passes on
// the current stream and forms the per-channel vectors between them ([C]-sized torch ops). Schemas
// and math: csrc/ops.cpp; C++ autograd: csrc/cwc_block.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <limits>
#include <optional>
#include <tuple>

#include "../cwc_block.h"  // csrc/cwc_block.h: the checks shared with the CPU kernels
#include "cuda/cwc_block.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

at::Tensor empty_nhwc(int64_t n, int64_t c, int64_t h, int64_t w, const at::TensorOptions& options) {
  return at::empty({n, h, w, c}, options).permute({0, 3, 1, 2});
}

// The sum over tiles of per-tile partials [tiles, c], in double, back to the partials' type.
at::Tensor total(const at::Tensor& part) { return part.sum(0, false, at::kDouble).to(part.scalar_type()); }

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cwc_block_fwd(
    const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias, const std::optional<at::Tensor>& mean_in,
    const std::optional<at::Tensor>& var_in, int64_t num_classes, bool pool, double eps) {
  check_cuda(z, "z");
  check_cwc_block_fwd_args(z, weight, bias, mean_in, var_in, num_classes);
  const c10::cuda::CUDAGuard guard(z.device());
  const int64_t n = z.size(0), c = z.size(1), h = z.size(2), w = z.size(3);
  const int64_t ho = pool ? h / 2 : h, wo = pool ? w / 2 : w, pix = ho * wo, cg = c / num_classes;
  const DType dt = dtype_of(z.scalar_type());
  const bool batch_stats = !mean_in.has_value();
  at::Tensor p = empty_nhwc(n, c, ho, wo, z.options());
  at::Tensor y = empty_nhwc(n, c, ho, wo, z.options());
  at::Tensor idx =
      pool ? empty_nhwc(n, c, ho, wo, z.options().dtype(at::kByte)) : at::empty({0}, z.options().dtype(at::kByte));
  at::Tensor part = at::empty({n * cwc_row_blocks(pix), c}, weight.options());
  const cudaStream_t stream = current_stream();
  check_launch(launch_cwc_pool_relu(dt, z.const_data_ptr(), p.mutable_data_ptr(),
                                    pool ? idx.mutable_data_ptr<uint8_t>() : nullptr,
                                    batch_stats ? part.mutable_data_ptr() : nullptr, n, c, h, w, pool, stream),
               "cwc_block_fwd");
  at::Tensor mean, var;
  if (!batch_stats) {
    mean = mean_in->clone();
    var = var_in->clone();
  } else if (n * pix > 0) {
    mean = total(part) / static_cast<double>(n * pix);
    check_launch(launch_cwc_centered_sq(dt, p.const_data_ptr(), mean.const_data_ptr(), part.mutable_data_ptr(), n, pix,
                                        c, stream),
                 "cwc_block_fwd");
    var = total(part) / static_cast<double>(n * pix);
  } else {  // the statistics of an empty batch are NaN, as torch's
    mean = at::full({c}, std::numeric_limits<double>::quiet_NaN(), weight.options());
    var = mean.clone();
  }
  const at::Tensor a = weight / at::sqrt(var + eps);
  const at::Tensor b = bias - mean * a;
  check_launch(launch_cwc_normalize(dt, p.const_data_ptr(), a.const_data_ptr(), b.const_data_ptr(),
                                    y.mutable_data_ptr(), part.mutable_data_ptr(), n, pix, c, stream),
               "cwc_block_fwd");
  at::Tensor g = n * pix > 0
                     ? part.view({n, cwc_row_blocks(pix), num_classes, cg}).sum({1, 3}) / static_cast<double>(cg * pix)
                     : at::full({n, num_classes}, std::numeric_limits<double>::quiet_NaN(), weight.options());
  return {y, g, p, idx, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cwc_block_bwd(const std::optional<at::Tensor>& grad_y,
                                                             const std::optional<at::Tensor>& grad_g,
                                                             const at::Tensor& p, const at::Tensor& idx,
                                                             const at::Tensor& weight, const at::Tensor& bias,
                                                             const at::Tensor& mean, const at::Tensor& var,
                                                             int64_t num_classes, bool pool, bool batch_stats,
                                                             double eps, int64_t height, int64_t width) {
  check_cuda(p, "p");
  check_cwc_block_bwd_args(grad_y, grad_g, p, idx, weight, bias, mean, var, num_classes, pool, height, width);
  const c10::cuda::CUDAGuard guard(p.device());
  const int64_t n = p.size(0), c = p.size(1), pix = p.size(2) * p.size(3), cg = c / num_classes, m = n * pix;
  const DType dt = dtype_of(p.scalar_type());
  const at::Tensor rstd = at::rsqrt(var + eps);
  const at::Tensor a = weight * rstd;
  const at::Tensor b = bias - mean * a;
  const at::Tensor gk = grad_g.has_value()
                            ? (*grad_g * (2.0 / static_cast<double>(cg * pix))).repeat_interleave(cg, 1).contiguous()
                            : at::zeros({n, c}, weight.options());
  at::Tensor part_dy = at::empty({n * cwc_row_blocks(pix), c}, weight.options());
  at::Tensor part_dyx = at::empty_like(part_dy);
  const void* gy = grad_y.has_value() ? grad_y->const_data_ptr() : nullptr;
  const cudaStream_t stream = current_stream();
  check_launch(launch_cwc_bwd_sums(dt, p.const_data_ptr(), gy, gk.const_data_ptr(), a.const_data_ptr(),
                                   b.const_data_ptr(), mean.const_data_ptr(), part_dy.mutable_data_ptr(),
                                   part_dyx.mutable_data_ptr(), n, pix, c, stream),
               "cwc_block_bwd");
  const at::Tensor dbias = total(part_dy);
  const at::Tensor dweight = total(part_dyx) * rstd;
  at::Tensor c0 = at::zeros_like(a), c1 = at::zeros_like(a);
  if (batch_stats && m > 0) {
    const at::Tensor u = a * dweight * rstd / static_cast<double>(m);
    c1 = -u;
    c0 = -a * dbias / static_cast<double>(m) + u * mean;
  }
  at::Tensor dz = empty_nhwc(n, c, height, width, p.options());
  if (pool && (height % 2 || width % 2)) dz.zero_();  // the rows / columns the pool drops
  check_launch(
      launch_cwc_bwd_dz(dt, p.const_data_ptr(), gy, gk.const_data_ptr(), pool ? idx.const_data_ptr<uint8_t>() : nullptr,
                        a.const_data_ptr(), b.const_data_ptr(), c0.const_data_ptr(), c1.const_data_ptr(),
                        dz.mutable_data_ptr(), n, c, height, width, pool, stream),
      "cwc_block_bwd");
  return {dz, dweight, dbias};
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("cwc_block_fwd", &ffops::gpu::cwc_block_fwd);
  m.impl("cwc_block_bwd", &ffops::gpu::cwc_block_bwd);
}
