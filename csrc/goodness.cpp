// Autograd of the goodness ops in C++ (goodness_fwd, ff_loss_fwd, normalize_fwd; their backward
// kernels are row_scale and normalize_bwd), for every device their kernels run on (the Autograd alias
// key) and for both kernel sets that share their schemas (csrc/ops.cpp): the C++ kernels
// (ffops::<op>: csrc/cpu/goodness.cpp, csrc/cuda/goodness{.cu,_cuda.cpp}) and the Triton launchers
// (ffops::triton_<op>, registered from Python). Each formula is written once, templated on the set
// (kTriton): its forward and backward call the kernels of the same set.
//
// A Python formula (torch.library.register_autograd) runs on every call, gradient or not, and costs
// tens of microseconds, which on a GPU is more than the kernels; these are hand-written nodes
// (csrc/autograd_node.h) that cost what a built-in op's autograd does. Gradients that do not reach an
// output arrive undefined and are skipped rather than filled with zeros.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd_node.h"
#include "common.h"

namespace ffops {
namespace {

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
struct GoodnessBackward final : FormulaNode<GoodnessBackward<kTriton>> {
  static constexpr const char* kOp = "goodness";
  SavedTensor h;
  double scale = 1.0;

  static constexpr const char* kName = kTriton ? "ffops::TritonGoodnessBackward" : "ffops::GoodnessBackward";
  auto saved() { return std::tie(h); }
  auto attrs() { return std::tie(scale); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 1>& tensors,
                          const std::vector<bool>& /*needs*/) const {
    at::Tensor dh;
    if (grads[0].defined()) dh = row_scale_op<kTriton>().call(tensors[0], ((2.0 * scale) * grads[0]).contiguous());
    return {dh};
  }
};

// loss = softplus(z), z = coef * (t - g), t = target or theta: dloss/dg = -coef sigmoid(z),
// dloss/dt = coef sigmoid(z); then dh as for the goodness.
template <bool kTriton>
struct FFLossBackward final : FormulaNode<FFLossBackward<kTriton>> {
  static constexpr const char* kOp = "ff_loss";
  SavedTensor h, g, target;
  double scale = 1.0, coef = 1.0, theta = 0.0;

  static constexpr const char* kName = kTriton ? "ffops::TritonFFLossBackward" : "ffops::FFLossBackward";
  auto saved() { return std::tie(h, g, target); }
  auto attrs() { return std::tie(scale, coef, theta); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 3>& tensors,
                          const std::vector<bool>& /*needs*/) const {
    const auto& [saved_h, saved_g, saved_target] = tensors;
    const at::Tensor &grad_g = grads[0], &grad_loss = grads[1];
    at::Tensor dg = grad_g, dtarget;
    if (grad_loss.defined()) {
      const at::Tensor t_minus_g = saved_target.defined() ? saved_target - saved_g : theta - saved_g;
      const at::Tensor dloss_dz = at::sigmoid(coef * t_minus_g) * grad_loss;
      dg = dg.defined() ? dg - coef * dloss_dz : -coef * dloss_dz;
      if (saved_target.defined()) dtarget = coef * dloss_dz;
    }
    at::Tensor dh;
    if (dg.defined()) dh = row_scale_op<kTriton>().call(saved_h, ((2.0 * scale) * dg).contiguous());
    return {dh, dtarget};
  }
};

// (y, s) = (h / (sqrt(norm_scale s) + eps), sum_k h^2); backward in normalize_bwd, or 2 ds h when
// only s is used.
template <bool kTriton>
struct NormalizeBackward final : FormulaNode<NormalizeBackward<kTriton>> {
  static constexpr const char* kOp = "ff_normalize";
  SavedTensor h, s;
  double norm_scale = 1.0, eps = 0.0;

  static constexpr const char* kName = kTriton ? "ffops::TritonNormalizeBackward" : "ffops::NormalizeBackward";
  auto saved() { return std::tie(h, s); }
  auto attrs() { return std::tie(norm_scale, eps); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 2>& tensors,
                          const std::vector<bool>& /*needs*/) const {
    const auto& [saved_h, saved_s] = tensors;
    const at::Tensor &grad_y = grads[0], &grad_s = grads[1];
    at::Tensor dh;
    if (grad_y.defined()) {
      dh = normalize_bwd_op<kTriton>().call(rows_last_contiguous(grad_y), defined_or_none(grad_s), saved_h, saved_s,
                                            norm_scale, eps);
    } else if (grad_s.defined()) {
      dh = row_scale_op<kTriton>().call(saved_h, (2.0 * grad_s).contiguous());
    }
    return {dh};
  }
};

template <bool kTriton>
at::Tensor goodness_fwd_autograd(const at::Tensor& h, double scale) {
  at::Tensor g;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    g = goodness_fwd_op<kTriton>().call(h, scale);
  }
  if (auto node = make_backward_node<GoodnessBackward<kTriton>>("goodness", h)) {
    node->h.save(h, /*is_output=*/false);
    node->scale = scale;
    torch::autograd::set_history(g, node);
  }
  return g;
}

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> ff_loss_fwd_autograd(const at::Tensor& h, double scale, double coef, double theta,
                                                        const Opt& target) {
  at::Tensor g, loss;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(g, loss) = ff_loss_fwd_op<kTriton>().call(h, scale, coef, theta, target);
  }
  const at::Tensor target_or_undefined = target.value_or(at::Tensor());
  if (auto node = make_backward_node<FFLossBackward<kTriton>>("ff_loss", h, target_or_undefined)) {
    node->scale = scale;
    node->coef = coef;
    node->theta = theta;
    torch::autograd::set_history(g, node);     // output 0
    torch::autograd::set_history(loss, node);  // output 1
    node->h.save(h, /*is_output=*/false);
    node->g.save(g, /*is_output=*/true);
    node->target.save(target_or_undefined, /*is_output=*/false);
  }
  return {g, loss};
}

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> normalize_fwd_autograd(const at::Tensor& h, double norm_scale, double eps) {
  at::Tensor y, s;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, s) = normalize_fwd_op<kTriton>().call(h, norm_scale, eps);
  }
  if (auto node = make_backward_node<NormalizeBackward<kTriton>>("ff_normalize", h)) {
    node->norm_scale = norm_scale;
    node->eps = eps;
    torch::autograd::set_history(y, node);  // output 0
    torch::autograd::set_history(s, node);  // output 1
    node->h.save(h, /*is_output=*/false);
    node->s.save(s, /*is_output=*/true);
  }
  return {y, s};
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
