// Autograd of cwc_block_fwd in C++ (its backward kernel is cwc_block_bwd), for every device its
// kernels run on and for both kernel sets that share its schema (csrc/ops.cpp): the C++ kernels
// (ffops::cwc_block_*: csrc/cpu/cwc_block.cpp, csrc/cuda/cwc_block{.cu,_cuda.cpp}) and the Triton
// launchers (ffops::triton_cwc_block_*, registered from Python). See csrc/goodness.cpp for why C++.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd_node.h"
#include "common.h"

namespace ffops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;
using Six = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

template <bool kTriton>
const auto& fwd_op() {
  static const auto op = find_op<Six(const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&, const Opt&,
                                     int64_t, bool, double)>(op_name<kTriton>("cwc_block_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& bwd_op() {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const Opt&, const Opt&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const at::Tensor&, const at::Tensor&, int64_t, bool, bool, double, int64_t, int64_t)>(
      op_name<kTriton>("cwc_block_bwd").c_str());
  return op;
}

// Differentiable in z, weight and bias through y and g; p, idx, mean and var are saved state and
// statistics (not differentiable).
template <bool kTriton>
class CwCBlock : public torch::autograd::Function<CwCBlock<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& z, const at::Tensor& weight,
                               const at::Tensor& bias, const Opt& mean, const Opt& var, int64_t num_classes, bool pool,
                               double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [y, g, p, idx, batch_mean, batch_var] =
        fwd_op<kTriton>().call(z, weight, bias, mean, var, num_classes, pool, eps);
    ctx->save_for_backward({p, idx, weight, bias, batch_mean, batch_var});
    ctx->saved_data["num_classes"] = num_classes;
    ctx->saved_data["pool"] = pool;
    ctx->saved_data["batch_stats"] = !mean.has_value();
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["height"] = z.size(2);
    ctx->saved_data["width"] = z.size(3);
    ctx->mark_non_differentiable({p, idx, batch_mean, batch_var});
    return {y, g, p, idx, batch_mean, batch_var};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &grad_y = grads[0], &grad_g = grads[1];
    if (!grad_y.defined() && !grad_g.defined())
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
              at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    const Opt gy = grad_y.defined() ? Opt(grad_y.contiguous(at::MemoryFormat::ChannelsLast)) : std::nullopt;
    auto [dz, dweight, dbias] =
        bwd_op<kTriton>().call(gy, defined_or_none(grad_g), saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
                               ctx->saved_data["num_classes"].toInt(), ctx->saved_data["pool"].toBool(),
                               ctx->saved_data["batch_stats"].toBool(), ctx->saved_data["eps"].toDouble(),
                               ctx->saved_data["height"].toInt(), ctx->saved_data["width"].toInt());
    return {dz, dweight, dbias, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <bool kTriton>
Six cwc_block_fwd_autograd(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias, const Opt& mean,
                           const Opt& var, int64_t num_classes, bool pool, double eps) {
  auto out = CwCBlock<kTriton>::apply(z, weight, bias, mean, var, num_classes, pool, eps);
  return {out[0], out[1], out[2], out[3], out[4], out[5]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("cwc_block_fwd", &ffops::cwc_block_fwd_autograd<false>);
  m.impl("triton_cwc_block_fwd", &ffops::cwc_block_fwd_autograd<true>);
}
