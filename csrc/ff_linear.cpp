// Autograd of the fused Forward-Forward layer ops in C++ (ff_linear_fwd and ff_linear_overlay_fwd;
// their backward kernels are ff_linear_bwd and ff_linear_overlay_bwd), for every device their kernels
// run on (the Autograd alias key) and for both kernel sets that share their schemas (csrc/ops.cpp):
// the C++ kernels (ffops::<op>: csrc/cpu/ff_linear*.cpp, csrc/cuda/ff_linear{.cu,_cuda.cpp}) and the
// Triton launchers (ffops::triton_<op>, registered from Python). Each formula is written once,
// templated on the set (kTriton): its forward and backward call the kernels of the same set.
// ff_label_rows is inference only and has no autograd.
//
// A Python formula (torch.library.register_autograd) runs on every call, gradient or not, and costs
// tens of microseconds, which on a GPU is more than the kernels; these cost what a built-in op's
// autograd does. Gradients that do not reach an output arrive undefined (set_materialize_grads(false))
// and are skipped rather than filled with zeros.
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

// Typed handles of the set's operators, looked up on first use (the Triton set's kernels are
// registered after this library loads).
template <bool kTriton>
const auto& ff_linear_fwd_op() {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const Opt&, const at::Tensor&, const Opt&, int64_t)>(
      op_name<kTriton>("ff_linear_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& ff_linear_bwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const Opt&, const at::Tensor&, const at::Tensor&,
                                                 const Opt&, int64_t)>(op_name<kTriton>("ff_linear_bwd").c_str());
  return op;
}

template <bool kTriton>
const auto& overlay_fwd_op() {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&, const at::Tensor&, const Opt&, int64_t,
      int64_t)>(op_name<kTriton>("ff_linear_overlay_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& overlay_bwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&,
                                                 const at::Tensor&, const at::Tensor&, const Opt&, int64_t, int64_t)>(
          op_name<kTriton>("ff_linear_overlay_bwd").c_str());
  return op;
}

// The gradient of sumsq [rows of h] for the backward kernels, zeros when none reached it.
at::Tensor grad_sumsq_or_zeros(const at::Tensor& grad, const at::Tensor& h) {
  if (grad.defined()) return grad.contiguous();
  // sizes may be symbolic under torch.compile
  return at::zeros_symint({h.sym_size(0)}, h.options().dtype(stat_type(h.scalar_type())));
}

// The fused FF layer: h (non-differentiable, the next layer's input), sumsq and pos_mean, whose
// gradients become the weight and bias gradients in ff_linear_bwd. x and x_scale get none.
template <bool kTriton>
class FFLinear : public torch::autograd::Function<FFLinear<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const Opt& x_scale, const at::Tensor& weight,
                               const Opt& bias, int64_t n_pos) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [h, sumsq, pos_mean] = ff_linear_fwd_op<kTriton>().call(x, x_scale, weight, bias, n_pos);
    ctx->mark_non_differentiable({h});
    ctx->save_for_backward({x, x_scale.value_or(at::Tensor()), h});
    ctx->saved_data["n_pos"] = n_pos;
    ctx->saved_data["has_bias"] = bias.has_value();
    return {h, sumsq, pos_mean};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &x_scale = saved[1], &h = saved[2];
    if (!grads[1].defined() && !grads[2].defined())
      return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
    auto [grad_w, grad_b] =
        ff_linear_bwd_op<kTriton>().call(x, defined_or_none(x_scale), h, grad_sumsq_or_zeros(grads[1], h),
                                         defined_or_none(grads[2]), ctx->saved_data["n_pos"].toInt());
    return {at::Tensor(), at::Tensor(), grad_w, ctx->saved_data["has_bias"].toBool() ? grad_b : at::Tensor(),
            at::Tensor()};
  }
};

// ff_linear on the label overlays of shared inputs (same outputs and gradients as FFLinear on the
// materialized rows); base, labels, on and x_scale get no gradient.
template <bool kTriton>
class FFLinearOverlay : public torch::autograd::Function<FFLinearOverlay<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& base, const at::Tensor& labels,
                               const at::Tensor& on, const Opt& x_scale, const at::Tensor& weight, const Opt& bias,
                               int64_t num_classes, int64_t n_pos) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [h, sumsq, pos_mean] =
        overlay_fwd_op<kTriton>().call(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
    ctx->mark_non_differentiable({h});
    ctx->save_for_backward({base, labels, on, x_scale.value_or(at::Tensor()), h});
    ctx->saved_data["num_classes"] = num_classes;
    ctx->saved_data["n_pos"] = n_pos;
    ctx->saved_data["has_bias"] = bias.has_value();
    return {h, sumsq, pos_mean};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &base = saved[0], &labels = saved[1], &on = saved[2], &x_scale = saved[3], &h = saved[4];
    variable_list out(8);
    if (!grads[1].defined() && !grads[2].defined()) return out;
    auto [grad_w, grad_b] = overlay_bwd_op<kTriton>().call(
        base, labels, on, defined_or_none(x_scale), h, grad_sumsq_or_zeros(grads[1], h), defined_or_none(grads[2]),
        ctx->saved_data["num_classes"].toInt(), ctx->saved_data["n_pos"].toInt());
    out[4] = grad_w;
    if (ctx->saved_data["has_bias"].toBool()) out[5] = grad_b;
    return out;
  }
};

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_fwd_autograd(const at::Tensor& x, const Opt& x_scale,
                                                                      const at::Tensor& weight, const Opt& bias,
                                                                      int64_t n_pos) {
  auto out = FFLinear<kTriton>::apply(x, x_scale, weight, bias, n_pos);
  return {out[0], out[1], out[2]};
}

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor, at::Tensor> overlay_fwd_autograd(const at::Tensor& base, const at::Tensor& labels,
                                                                    const at::Tensor& on, const Opt& x_scale,
                                                                    const at::Tensor& weight, const Opt& bias,
                                                                    int64_t num_classes, int64_t n_pos) {
  auto out = FFLinearOverlay<kTriton>::apply(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("ff_linear_fwd", &ffops::ff_linear_fwd_autograd<false>);
  m.impl("ff_linear_overlay_fwd", &ffops::overlay_fwd_autograd<false>);
  m.impl("triton_ff_linear_fwd", &ffops::ff_linear_fwd_autograd<true>);
  m.impl("triton_ff_linear_overlay_fwd", &ffops::overlay_fwd_autograd<true>);
}
