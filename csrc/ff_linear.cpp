// Autograd of the fused Forward-Forward layer ops in C++ (ff_linear_fwd and ff_linear_overlay_fwd;
// their backward kernels are ff_linear_bwd and ff_linear_overlay_bwd), for every device their kernels
// run on (the Autograd alias key) and for both kernel sets that share their schemas (csrc/ops.cpp):
// the C++ kernels (ffops::<op>: csrc/cpu/ff_linear*.cpp, csrc/cuda/ff_linear{.cu,_cuda.cpp}) and the
// Triton launchers (ffops::triton_<op>, registered from Python). Each formula is written once,
// templated on the set (kTriton): its forward and backward call the kernels of the same set.
// ff_label_rows is inference only and has no autograd.
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
// gradients become the weight and bias gradients in ff_linear_bwd. x and x_scale get none: the node's
// edges go to weight and bias only.
template <bool kTriton>
struct FFLinearBackward final : FormulaNode<FFLinearBackward<kTriton>> {
  static constexpr const char* kOp = "ff_linear";
  SavedTensor x, x_scale, h;
  int64_t n_pos = 0;

  static constexpr const char* kName = kTriton ? "ffops::TritonFFLinearBackward" : "ffops::FFLinearBackward";
  auto saved() { return std::tie(x, x_scale, h); }
  auto attrs() { return std::tie(n_pos); }

  // grads: of sumsq and pos_mean; returns the gradients of weight and bias
  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 3>& tensors,
                          const std::vector<bool>& needs) const {
    if (!grads[0].defined() && !grads[1].defined()) return {at::Tensor(), at::Tensor()};
    const auto& [saved_x, saved_x_scale, saved_h] = tensors;
    auto [grad_w, grad_b] =
        ff_linear_bwd_op<kTriton>().call(saved_x, defined_or_none(saved_x_scale), saved_h,
                                         grad_sumsq_or_zeros(grads[0], saved_h), defined_or_none(grads[1]), n_pos);
    return {grad_w, needs[1] ? grad_b : at::Tensor()};
  }
};

// ff_linear on the label overlays of shared inputs (same outputs and gradients as FFLinear on the
// materialized rows); base, labels, on and x_scale get no gradient.
template <bool kTriton>
struct FFLinearOverlayBackward final : FormulaNode<FFLinearOverlayBackward<kTriton>> {
  static constexpr const char* kOp = "ff_linear_overlay";
  SavedTensor base, labels, on, x_scale, h;
  int64_t num_classes = 0, n_pos = 0;

  static constexpr const char* kName =
      kTriton ? "ffops::TritonFFLinearOverlayBackward" : "ffops::FFLinearOverlayBackward";
  auto saved() { return std::tie(base, labels, on, x_scale, h); }
  auto attrs() { return std::tie(num_classes, n_pos); }

  // grads: of sumsq and pos_mean; returns the gradients of weight and bias
  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 5>& tensors,
                          const std::vector<bool>& needs) const {
    if (!grads[0].defined() && !grads[1].defined()) return {at::Tensor(), at::Tensor()};
    const auto& [saved_base, saved_labels, saved_on, saved_x_scale, saved_h] = tensors;
    auto [grad_w, grad_b] = overlay_bwd_op<kTriton>().call(
        saved_base, saved_labels, saved_on, defined_or_none(saved_x_scale), saved_h,
        grad_sumsq_or_zeros(grads[0], saved_h), defined_or_none(grads[1]), num_classes, n_pos);
    return {grad_w, needs[1] ? grad_b : at::Tensor()};
  }
};

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_fwd_autograd(const at::Tensor& x, const Opt& x_scale,
                                                                      const at::Tensor& weight, const Opt& bias,
                                                                      int64_t n_pos) {
  at::Tensor h, sumsq, pos_mean;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(h, sumsq, pos_mean) = ff_linear_fwd_op<kTriton>().call(x, x_scale, weight, bias, n_pos);
  }
  if (auto node = make_backward_node<FFLinearBackward<kTriton>>("ff_linear", weight, bias.value_or(at::Tensor()))) {
    node->n_pos = n_pos;
    torch::autograd::set_history(sumsq, node);     // output 0; h is not differentiable
    torch::autograd::set_history(pos_mean, node);  // output 1
    node->x.save(x, /*is_output=*/false);
    node->x_scale.save(x_scale.value_or(at::Tensor()), /*is_output=*/false);
    node->h.save(h, /*is_output=*/false);
  }
  return {h, sumsq, pos_mean};
}

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor, at::Tensor> overlay_fwd_autograd(const at::Tensor& base, const at::Tensor& labels,
                                                                    const at::Tensor& on, const Opt& x_scale,
                                                                    const at::Tensor& weight, const Opt& bias,
                                                                    int64_t num_classes, int64_t n_pos) {
  at::Tensor h, sumsq, pos_mean;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(h, sumsq, pos_mean) =
        overlay_fwd_op<kTriton>().call(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
  }
  if (auto node = make_backward_node<FFLinearOverlayBackward<kTriton>>("ff_linear_overlay", weight,
                                                                       bias.value_or(at::Tensor()))) {
    node->num_classes = num_classes;
    node->n_pos = n_pos;
    torch::autograd::set_history(sumsq, node);     // output 0; h is not differentiable
    torch::autograd::set_history(pos_mean, node);  // output 1
    node->base.save(base, /*is_output=*/false);
    node->labels.save(labels, /*is_output=*/false);
    node->on.save(on, /*is_output=*/false);
    node->x_scale.save(x_scale.value_or(at::Tensor()), /*is_output=*/false);
    node->h.save(h, /*is_output=*/false);
  }
  return {h, sumsq, pos_mean};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("ff_linear_fwd", &ffops::ff_linear_fwd_autograd<false>);
  m.impl("ff_linear_overlay_fwd", &ffops::overlay_fwd_autograd<false>);
  m.impl("triton_ff_linear_fwd", &ffops::ff_linear_fwd_autograd<true>);
  m.impl("triton_ff_linear_overlay_fwd", &ffops::overlay_fwd_autograd<true>);
}
