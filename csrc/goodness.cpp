// Autograd of the goodness ops in C++ (goodness_fwd, ff_loss_fwd, normalize_fwd; their backward
// kernels are row_scale and normalize_bwd), for every device their kernels run on (the Autograd alias
// key) and for both kernel sets that share their schemas (csrc/ops.cpp): the C++ kernels
// (ffops::<op>: csrc/cpu/goodness.cpp, csrc/cuda/goodness{.cu,_cuda.cpp}) and the Triton launchers
// (ffops::triton_<op>, registered from Python). Each formula is written once, templated on the set
// (kTriton): its forward and backward call the kernels of the same set.
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

#include "backward_dispatch.h"
#include "common.h"

namespace ffops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;

// Typed handles of the set's operators, looked up on first use (the Triton set's kernels are
// registered after this library loads).
template <bool kTriton>
const auto& goodness_fwd_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&, double)>(op_name<kTriton>("goodness_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& row_scale_op() {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>(op_name<kTriton>("row_scale").c_str());
  return op;
}

template <bool kTriton>
const auto& ff_loss_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double, double, const Opt&)>(
          op_name<kTriton>("ff_loss_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& normalize_fwd_op() {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double)>(
      op_name<kTriton>("normalize_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& normalize_bwd_op() {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const Opt&, const at::Tensor&, const at::Tensor&, double, double)>(
          op_name<kTriton>("normalize_bwd").c_str());
  return op;
}

// g = scale * sum_k h^2: dh = (2 scale dg) * h.
template <bool kTriton>
class Goodness : public torch::autograd::Function<Goodness<kTriton>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({h});
    ctx->saved_data["scale"] = scale;
    return goodness_fwd_op<kTriton>().call(h, scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const at::Tensor h = ctx->get_saved_variables()[0];
    at::Tensor dh;
    if (grads[0].defined()) {
      dh = row_scale_op<kTriton>().call(h, ((2.0 * ctx->saved_data["scale"].toDouble()) * grads[0]).contiguous());
    }
    return {dh, at::Tensor()};
  }
};

// loss = softplus(z), z = coef * (t - g), t = target or theta: dloss/dg = -coef sigmoid(z),
// dloss/dt = coef sigmoid(z); then dh as for the goodness.
template <bool kTriton>
class FFLoss : public torch::autograd::Function<FFLoss<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& h, double scale, double coef, double theta,
                               const Opt& target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [g, loss] = ff_loss_fwd_op<kTriton>().call(h, scale, coef, theta, target);
    ctx->save_for_backward({h, g, target.value_or(at::Tensor())});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["coef"] = coef;
    ctx->saved_data["theta"] = theta;
    return {g, loss};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &g = saved[1], &target = saved[2];
    const at::Tensor &grad_g = grads[0], &grad_loss = grads[1];
    const double coef = ctx->saved_data["coef"].toDouble();
    at::Tensor dg = grad_g, dtarget;
    if (grad_loss.defined()) {
      const at::Tensor t_minus_g = target.defined() ? target - g : ctx->saved_data["theta"].toDouble() - g;
      const at::Tensor dloss_dz = at::sigmoid(coef * t_minus_g) * grad_loss;
      dg = dg.defined() ? dg - coef * dloss_dz : -coef * dloss_dz;
      if (target.defined()) dtarget = coef * dloss_dz;
    }
    at::Tensor dh;
    if (dg.defined()) {
      dh = row_scale_op<kTriton>().call(h, ((2.0 * ctx->saved_data["scale"].toDouble()) * dg).contiguous());
    }
    return {dh, at::Tensor(), at::Tensor(), at::Tensor(), dtarget};
  }
};

// (y, s) = (h / (sqrt(norm_scale s) + eps), sum_k h^2); backward in normalize_bwd, or 2 ds h when
// only s is used.
template <bool kTriton>
class Normalize : public torch::autograd::Function<Normalize<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& h, double norm_scale, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [y, s] = normalize_fwd_op<kTriton>().call(h, norm_scale, eps);
    ctx->save_for_backward({h, s});
    ctx->saved_data["norm_scale"] = norm_scale;
    ctx->saved_data["eps"] = eps;
    return {y, s};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &s = saved[1];
    const at::Tensor &grad_y = grads[0], &grad_s = grads[1];
    at::Tensor dh;
    if (grad_y.defined()) {
      dh =
          normalize_bwd_op<kTriton>().call(rows_last_contiguous(grad_y), defined_or_none(grad_s), h, s,
                                           ctx->saved_data["norm_scale"].toDouble(), ctx->saved_data["eps"].toDouble());
    } else if (grad_s.defined()) {
      dh = row_scale_op<kTriton>().call(h, (2.0 * grad_s).contiguous());
    }
    return {dh, at::Tensor(), at::Tensor()};
  }
};

template <bool kTriton>
at::Tensor goodness_fwd_autograd(const at::Tensor& h, double scale) {
  return Goodness<kTriton>::apply(h, scale);
}

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> ff_loss_fwd_autograd(const at::Tensor& h, double scale, double coef, double theta,
                                                        const Opt& target) {
  auto out = FFLoss<kTriton>::apply(h, scale, coef, theta, target);
  return {out[0], out[1]};
}

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> normalize_fwd_autograd(const at::Tensor& h, double norm_scale, double eps) {
  auto out = Normalize<kTriton>::apply(h, norm_scale, eps);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("goodness_fwd", &ffops::goodness_fwd_autograd<false>);
  m.impl("ff_loss_fwd", &ffops::ff_loss_fwd_autograd<false>);
  m.impl("normalize_fwd", &ffops::normalize_fwd_autograd<false>);
  m.impl("triton_goodness_fwd", &ffops::goodness_fwd_autograd<true>);
  m.impl("triton_ff_loss_fwd", &ffops::ff_loss_fwd_autograd<true>);
  m.impl("triton_normalize_fwd", &ffops::normalize_fwd_autograd<true>);
}
