// Autograd of the Forward-Forward ops in C++, for every device their kernels run on (the Autograd
// alias key): goodness_fwd, ff_loss_fwd, normalize_fwd, ff_linear_fwd and ff_linear_overlay_fwd.
// A Python formula (torch.library.register_autograd) runs on every call, gradient or not, and costs
// tens of microseconds, which on a GPU is more than the kernels; these cost what a built-in op's
// autograd does. The Triton kernel set keeps its Python formulas (ffops/ops/_ff_library.py,
// _ff_linear_library.py), which state the same math.
//
// Gradients that do not reach an output arrive undefined (set_materialize_grads(false)) and are
// skipped rather than filled with zeros.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd_helpers.h"
#include "ff_checks.h"

namespace ffops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

const auto& goodness_fwd_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&, double)>("ffops::goodness_fwd");
  return op;
}

const auto& row_scale_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&)>("ffops::row_scale");
  return op;
}

const auto& ff_loss_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double, double, const Opt&)>(
          "ffops::ff_loss_fwd");
  return op;
}

const auto& normalize_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, double)>("ffops::normalize_fwd");
  return op;
}

const auto& normalize_bwd_op() {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const Opt&, const at::Tensor&, const at::Tensor&, double, double)>(
          "ffops::normalize_bwd");
  return op;
}

const auto& ff_linear_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const Opt&, const at::Tensor&,
                                                             const Opt&, int64_t)>("ffops::ff_linear_fwd");
  return op;
}

const auto& ff_linear_bwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const Opt&, const at::Tensor&,
                                                 const at::Tensor&, const Opt&, int64_t)>("ffops::ff_linear_bwd");
  return op;
}

const auto& overlay_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                             const Opt&, const at::Tensor&, const Opt&, int64_t,
                                                             int64_t)>("ffops::ff_linear_overlay_fwd");
  return op;
}

const auto& overlay_bwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const Opt&, const at::Tensor&, const at::Tensor&, const Opt&, int64_t,
                                                 int64_t)>("ffops::ff_linear_overlay_bwd");
  return op;
}

Opt defined_or_none(const at::Tensor& t) { return t.defined() ? Opt(t.contiguous()) : std::nullopt; }

// g = scale * sum_k h^2: dh = (2 scale dg) * h.
class Goodness : public torch::autograd::Function<Goodness> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& h, double scale) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    ctx->save_for_backward({h});
    ctx->saved_data["scale"] = scale;
    return goodness_fwd_op().call(h, scale);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor h = ctx->get_saved_variables()[0];
    at::Tensor dh;
    if (grads[0].defined()) {
      dh = row_scale_op().call(h, ((2.0 * ctx->saved_data["scale"].toDouble()) * grads[0]).contiguous());
    }
    return {dh, at::Tensor()};
  }
};

// loss = softplus(z), z = coef * (t - g), t = target or theta: dloss/dg = -coef sigmoid(z),
// dloss/dt = coef sigmoid(z); then dh as for the goodness.
class FFLoss : public torch::autograd::Function<FFLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& h, double scale, double coef, double theta,
                               const Opt& target) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [g, loss] = ff_loss_fwd_op().call(h, scale, coef, theta, target);
    ctx->save_for_backward({h, g, target.value_or(at::Tensor())});
    ctx->saved_data["scale"] = scale;
    ctx->saved_data["coef"] = coef;
    ctx->saved_data["theta"] = theta;
    return {g, loss};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
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
    if (dg.defined()) dh = row_scale_op().call(h, ((2.0 * ctx->saved_data["scale"].toDouble()) * dg).contiguous());
    return {dh, at::Tensor(), at::Tensor(), at::Tensor(), dtarget};
  }
};

// (y, s) = (h / (sqrt(norm_scale s) + eps), sum_k h^2); backward in normalize_bwd, or 2 ds h when
// only s is used.
class Normalize : public torch::autograd::Function<Normalize> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& h, double norm_scale, double eps) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [y, s] = normalize_fwd_op().call(h, norm_scale, eps);
    ctx->save_for_backward({h, s});
    ctx->saved_data["norm_scale"] = norm_scale;
    ctx->saved_data["eps"] = eps;
    return {y, s};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &h = saved[0], &s = saved[1];
    const at::Tensor &grad_y = grads[0], &grad_s = grads[1];
    at::Tensor dh;
    if (grad_y.defined()) {
      dh = normalize_bwd_op().call(rows_last_contiguous(grad_y), defined_or_none(grad_s), h, s,
                                   ctx->saved_data["norm_scale"].toDouble(), ctx->saved_data["eps"].toDouble());
    } else if (grad_s.defined()) {
      dh = row_scale_op().call(h, (2.0 * grad_s).contiguous());
    }
    return {dh, at::Tensor(), at::Tensor()};
  }
};

// The gradient of sumsq [rows of h] for the backward kernels, zeros when none reached it.
at::Tensor grad_sumsq_or_zeros(const at::Tensor& grad, const at::Tensor& h) {
  if (grad.defined()) return grad.contiguous();
  // sizes may be symbolic under torch.compile
  return at::zeros_symint({h.sym_size(0)}, h.options().dtype(stat_type(h.scalar_type())));
}

// The fused FF layer: h (non-differentiable, the next layer's input), sumsq and pos_mean, whose
// gradients become the weight and bias gradients in ff_linear_bwd. x and x_scale get none.
class FFLinear : public torch::autograd::Function<FFLinear> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const Opt& x_scale,
                               const at::Tensor& weight, const Opt& bias, int64_t n_pos) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [h, sumsq, pos_mean] = ff_linear_fwd_op().call(x, x_scale, weight, bias, n_pos);
    ctx->mark_non_differentiable({h});
    ctx->save_for_backward({x, x_scale.value_or(at::Tensor()), h});
    ctx->saved_data["n_pos"] = n_pos;
    ctx->saved_data["has_bias"] = bias.has_value();
    return {h, sumsq, pos_mean};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &x_scale = saved[1], &h = saved[2];
    if (!grads[1].defined() && !grads[2].defined()) return {at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(),
                                                            at::Tensor()};
    auto [grad_w, grad_b] = ff_linear_bwd_op().call(x, defined_or_none(x_scale), h,
                                                    grad_sumsq_or_zeros(grads[1], h),
                                                    defined_or_none(grads[2]), ctx->saved_data["n_pos"].toInt());
    return {at::Tensor(), at::Tensor(), grad_w, ctx->saved_data["has_bias"].toBool() ? grad_b : at::Tensor(),
            at::Tensor()};
  }
};

// ff_linear on the label overlays of shared inputs (same outputs and gradients as FFLinear on the
// materialized rows); base, labels, on and x_scale get no gradient.
class FFLinearOverlay : public torch::autograd::Function<FFLinearOverlay> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& base, const at::Tensor& labels,
                               const at::Tensor& on, const Opt& x_scale, const at::Tensor& weight, const Opt& bias,
                               int64_t num_classes, int64_t n_pos) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->set_materialize_grads(false);
    auto [h, sumsq, pos_mean] = overlay_fwd_op().call(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
    ctx->mark_non_differentiable({h});
    ctx->save_for_backward({base, labels, on, x_scale.value_or(at::Tensor()), h});
    ctx->saved_data["num_classes"] = num_classes;
    ctx->saved_data["n_pos"] = n_pos;
    ctx->saved_data["has_bias"] = bias.has_value();
    return {h, sumsq, pos_mean};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &base = saved[0], &labels = saved[1], &on = saved[2], &x_scale = saved[3], &h = saved[4];
    variable_list out(8);
    if (!grads[1].defined() && !grads[2].defined()) return out;
    auto [grad_w, grad_b] = overlay_bwd_op().call(base, labels, on, defined_or_none(x_scale), h,
                                                  grad_sumsq_or_zeros(grads[1], h),
                                                  defined_or_none(grads[2]), ctx->saved_data["num_classes"].toInt(),
                                                  ctx->saved_data["n_pos"].toInt());
    out[4] = grad_w;
    if (ctx->saved_data["has_bias"].toBool()) out[5] = grad_b;
    return out;
  }
};

at::Tensor goodness_fwd_autograd(const at::Tensor& h, double scale) { return Goodness::apply(h, scale); }

std::tuple<at::Tensor, at::Tensor> ff_loss_fwd_autograd(const at::Tensor& h, double scale, double coef, double theta,
                                                        const Opt& target) {
  auto out = FFLoss::apply(h, scale, coef, theta, target);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> normalize_fwd_autograd(const at::Tensor& h, double norm_scale, double eps) {
  auto out = Normalize::apply(h, norm_scale, eps);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_fwd_autograd(const at::Tensor& x, const Opt& x_scale,
                                                                      const at::Tensor& weight, const Opt& bias,
                                                                      int64_t n_pos) {
  auto out = FFLinear::apply(x, x_scale, weight, bias, n_pos);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> overlay_fwd_autograd(const at::Tensor& base, const at::Tensor& labels,
                                                                    const at::Tensor& on, const Opt& x_scale,
                                                                    const at::Tensor& weight, const Opt& bias,
                                                                    int64_t num_classes, int64_t n_pos) {
  auto out = FFLinearOverlay::apply(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
  return {out[0], out[1], out[2]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("goodness_fwd", &ffops::goodness_fwd_autograd);
  m.impl("ff_loss_fwd", &ffops::ff_loss_fwd_autograd);
  m.impl("normalize_fwd", &ffops::normalize_fwd_autograd);
  m.impl("ff_linear_fwd", &ffops::ff_linear_fwd_autograd);
  m.impl("ff_linear_overlay_fwd", &ffops::overlay_fwd_autograd);
}
