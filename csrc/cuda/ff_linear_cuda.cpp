// Fused Forward-Forward linear layer on CUDA: the torch-facing side of csrc/cuda/ff_linear.cu.
// The GEMMs run in cuBLAS through at::mm; the epilogues (bias, scale, relu and the statistics in
// the forward, the dpre matrix and bias gradient in the backward) are one CUDA kernel each, see
// cuda/ff_linear.h; so are the all-label prediction rows (ff_label_rows). The overlay layer
// (ff_linear_overlay_*) reuses both epilogues around ATen gathers and sums. Validates the
// raw-pointer contract (the kernels index x_scale, bias, ... by the shapes of x and h; the checks
// shared with the CPU kernels csrc/cpu/ff_linear*.cpp, ff_label_rows.cpp are in csrc/ff_linear.h),
// allocates the outputs and launches on the current stream of x's device. Schemas and math:
// csrc/ops.cpp; C++ autograd: csrc/ff_linear.cpp.
#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cuda_runtime_api.h>

#include <optional>
#include <tuple>

#include "../ff_linear.h"  // csrc/ff_linear.h: the checks shared with the CPU kernels
#include "cuda/ff_linear.h"
#include "cuda/torch_glue.h"

namespace ffops::gpu {
namespace {

const void* opt_ptr(const std::optional<at::Tensor>& t) { return t.has_value() ? t->const_data_ptr() : nullptr; }

// The epilogues' workspace under torch.use_deterministic_algorithms(True): `query` (one of
// ff_linear_*_epilogue_workspace) sizes it; per-block partial sums are added there in a fixed order
// instead of with float atomics. Undefined (atomics) otherwise.
template <typename Query>
at::Tensor deterministic_workspace(const at::Tensor& h, const Query& query, const char* op) {
  if (!at::globalContext().deterministicAlgorithms()) return {};
  int64_t elems = 0;
  check_launch(query(&elems), op);
  return at::empty({elems}, h.options().dtype(stat_type(h.scalar_type())));
}

void* ptr_or_null(at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

// The forward epilogue in place over h = acc [rows, out] (arguments checked by the caller, device
// guard set): (sumsq, pos_mean) of the stat type.
std::tuple<at::Tensor, at::Tensor> fwd_epilogue(at::Tensor& h, const std::optional<at::Tensor>& x_scale,
                                                const std::optional<at::Tensor>& bias, int64_t n_pos, const char* op) {
  const int64_t rows = h.size(0), out = h.size(1);
  const DType dtype = dtype_of(h.scalar_type());
  at::Tensor sumsq = empty_stat(h);
  at::Tensor pos_mean = at::empty({out}, sumsq.options());
  at::Tensor ws = deterministic_workspace(
      h,
      [&](int64_t* elems) {
        return ff_linear_fwd_epilogue_workspace(dtype, h.const_data_ptr(), rows, out, opt_ptr(bias), elems);
      },
      op);
  check_launch(launch_ff_linear_fwd_epilogue(dtype, h.mutable_data_ptr(), rows, out, opt_ptr(x_scale), opt_ptr(bias),
                                             n_pos, sumsq.mutable_data_ptr(), pos_mean.mutable_data_ptr(),
                                             ptr_or_null(ws), current_stream()),
               op);
  return {sumsq, pos_mean};
}

// (h, sumsq, pos_mean); see ff_linear_fwd in csrc/ops.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_fwd(const at::Tensor& x,
                                                             const std::optional<at::Tensor>& x_scale,
                                                             const at::Tensor& weight,
                                                             const std::optional<at::Tensor>& bias, int64_t n_pos) {
  check_ff_linear_fwd_args(x, x_scale, weight, bias, n_pos);

  const c10::cuda::CUDAGuard guard(x.device());
  // acc = x @ weight^T in cuBLAS; the epilogue turns it into h in place.
  at::Tensor h = at::mm(x, weight.t());
  if (!h.is_contiguous()) h = h.contiguous();
  auto [sumsq, pos_mean] = fwd_epilogue(h, x_scale, bias, n_pos, "ff_linear_fwd");
  return {h, sumsq, pos_mean};
}

// The backward epilogue over the rows of h (arguments checked by the caller, device guard set):
// u = x_scale * dpre [rows, out] (h's dtype) and grad_bias (rounded to h's dtype).
std::tuple<at::Tensor, at::Tensor> bwd_epilogue(const at::Tensor& h, const std::optional<at::Tensor>& x_scale,
                                                const at::Tensor& grad_sumsq,
                                                const std::optional<at::Tensor>& grad_pos_mean, int64_t n_pos,
                                                const char* op) {
  const int64_t rows = h.size(0), out = h.size(1);
  const at::ScalarType st = stat_type(h.scalar_type());
  at::Tensor u = at::empty({rows, out}, h.options());
  at::Tensor grad_bias_acc = at::empty({out}, h.options().dtype(st));
  at::Tensor pos_coef;  // workspace: grad_pos_mean / n_pos
  if (grad_pos_mean.has_value()) pos_coef = at::empty({out}, h.options().dtype(st));
  const DType dtype = dtype_of(h.scalar_type());
  at::Tensor ws = deterministic_workspace(
      h,
      [&](int64_t* elems) {
        return ff_linear_bwd_epilogue_workspace(dtype, h.const_data_ptr(), rows, out, u.const_data_ptr(), elems);
      },
      op);
  check_launch(launch_ff_linear_bwd_epilogue(dtype, h.const_data_ptr(), rows, out, opt_ptr(x_scale),
                                             grad_sumsq.const_data_ptr(), opt_ptr(grad_pos_mean), n_pos,
                                             u.mutable_data_ptr(), grad_bias_acc.mutable_data_ptr(),
                                             ptr_or_null(pos_coef), ptr_or_null(ws), current_stream()),
               op);
  return {u, grad_bias_acc.to(h.scalar_type())};
}

// (grad_weight, grad_bias); see ff_linear_bwd in csrc/ops.cpp.
std::tuple<at::Tensor, at::Tensor> ff_linear_bwd(const at::Tensor& x, const std::optional<at::Tensor>& x_scale,
                                                 const at::Tensor& h, const at::Tensor& grad_sumsq,
                                                 const std::optional<at::Tensor>& grad_pos_mean, int64_t n_pos) {
  check_ff_linear_bwd_args(x, x_scale, h, grad_sumsq, grad_pos_mean, n_pos);

  const c10::cuda::CUDAGuard guard(x.device());
  auto [u, grad_bias] = bwd_epilogue(h, x_scale, grad_sumsq, grad_pos_mean, n_pos, "ff_linear_bwd");
  // grad_weight = u^T @ x in cuBLAS (zeros when rows == 0).
  return {at::mm(u.t(), x), grad_bias};
}

// (h, sumsq, pos_mean); see ff_linear_overlay_fwd in csrc/ops.cpp. cuBLAS runs the GEMM on the B
// shared rows without their label features (strided views, no copies); the rows are expanded to the
// R = k * B overlay rows with each row's label column added, and the forward epilogue turns them
// into h in place.
std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_overlay_fwd(
    const at::Tensor& base, const at::Tensor& labels, const at::Tensor& on, const std::optional<at::Tensor>& x_scale,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t num_classes, int64_t n_pos) {
  const int64_t copies = check_overlay_fwd_args(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
  const int64_t batch = base.size(0), in = base.size(1), out = weight.size(0);
  const int64_t c = num_classes;

  const c10::cuda::CUDAGuard guard(base.device());
  // 16-bit inputs: the shared GEMM and the label columns add up in float32 and h is rounded once, as
  // ff_linear's cuBLAS GEMM does (rounding the GEMM first, then the sum, loses up to twice as much).
  const at::ScalarType dtype = base.scalar_type(), acc = stat_type(dtype);
  at::Tensor pre;
  if (in == c) {
    pre = at::zeros({batch, out}, base.options().dtype(acc));
  } else {
    const at::Tensor x = base.narrow(1, c, in - c), wt = weight.narrow(1, c, in - c).t();
    pre = acc == dtype ? at::mm(x, wt) : at::mm(x, wt, acc);
  }
  at::Tensor h = pre.repeat({copies, 1});
  const at::Tensor on_rows =
      on.repeat({copies}).to(dtype).to(acc).unsqueeze(1);  // the label feature's value in x's dtype
  h.add_(weight.narrow(1, 0, c).t().index_select(0, labels).to(acc).mul_(on_rows));
  if (acc != dtype) h = h.to(dtype);
  auto [sumsq, pos_mean] = fwd_epilogue(h, x_scale, bias, n_pos, "ff_linear_overlay_fwd");
  return {h, sumsq, pos_mean};
}

// (grad_weight, grad_bias); see ff_linear_overlay_bwd in csrc/ops.cpp. The backward epilogue forms
// u = x_scale * dpre and grad_bias over the R rows; u is summed over the k copies of each shared row
// for the one cuBLAS GEMM on B rows, whose first C columns are replaced by the label columns
// u^T @ L (L [R, C]: on[r % B] at column labels[r]).
std::tuple<at::Tensor, at::Tensor> ff_linear_overlay_bwd(const at::Tensor& base, const at::Tensor& labels,
                                                         const at::Tensor& on, const std::optional<at::Tensor>& x_scale,
                                                         const at::Tensor& h, const at::Tensor& grad_sumsq,
                                                         const std::optional<at::Tensor>& grad_pos_mean,
                                                         int64_t num_classes, int64_t n_pos) {
  const int64_t copies =
      check_overlay_bwd_args(base, labels, on, x_scale, h, grad_sumsq, grad_pos_mean, num_classes, n_pos);
  const int64_t batch = base.size(0), rows = labels.size(0), out = h.size(1), c = num_classes;

  const c10::cuda::CUDAGuard guard(base.device());
  auto [u, grad_bias] = bwd_epilogue(h, x_scale, grad_sumsq, grad_pos_mean, n_pos, "ff_linear_overlay_bwd");
  at::Tensor grad_weight = at::mm(u.view({copies, batch, out}).sum(0).t(), base);
  at::Tensor label_rows = at::zeros({rows, c}, base.options());
  label_rows.scatter_(1, labels.unsqueeze(1), on.repeat({copies}).to(base.scalar_type()).unsqueeze(1));
  grad_weight.narrow(1, 0, c).copy_(at::mm(u.t(), label_rows));
  return {grad_weight, grad_bias};
}

// (h, sumsq); see ff_label_rows in csrc/ops.cpp.
std::tuple<at::Tensor, at::Tensor> ff_label_rows(const at::Tensor& pre, const at::Tensor& on,
                                                 const std::optional<at::Tensor>& scale, const at::Tensor& label_weight,
                                                 const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(pre.is_cuda(), "ffops: pre must be a CUDA tensor, got ", pre.device());
  const int64_t labels = check_label_rows_args(pre, on, scale, label_weight, bias);
  const int64_t batch = pre.size(0), out = pre.size(1);

  const c10::cuda::CUDAGuard guard(pre.device());
  at::Tensor h = at::empty({batch * labels, out}, pre.options());
  at::Tensor sumsq = at::empty({batch * labels}, pre.options().dtype(stat_type(pre.scalar_type())));
  const at::Tensor wt = label_weight.t().contiguous();  // [C, out]: each label row's weights read coalesced
  check_launch(launch_ff_label_rows(dtype_of(pre.scalar_type()), pre.const_data_ptr(), batch, out, on.const_data_ptr(),
                                    opt_ptr(scale), wt.const_data_ptr(), labels, opt_ptr(bias), h.mutable_data_ptr(),
                                    sumsq.mutable_data_ptr(), current_stream()),
               "ff_label_rows");
  return {h, sumsq};
}

}  // namespace
}  // namespace ffops::gpu

TORCH_LIBRARY_IMPL(ffops, CUDA, m) {
  m.impl("ff_linear_fwd", &ffops::gpu::ff_linear_fwd);
  m.impl("ff_linear_bwd", &ffops::gpu::ff_linear_bwd);
  m.impl("ff_label_rows", &ffops::gpu::ff_label_rows);
  m.impl("ff_linear_overlay_fwd", &ffops::gpu::ff_linear_overlay_fwd);
  m.impl("ff_linear_overlay_bwd", &ffops::gpu::ff_linear_overlay_bwd);
}
