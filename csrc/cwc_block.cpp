// Autograd of cwc_block_fwd in C++ (its backward kernel is cwc_block_bwd), for every device its
// kernels run on and for both kernel sets that share its schema (csrc/ops.cpp): the C++ kernels
// (ffops::cwc_block_*: csrc/cpu/cwc_block.cpp, csrc/cuda/cwc_block{.cu,_cuda.cpp}) and the Triton
// launchers (ffops::triton_cwc_block_*, registered from Python). See csrc/goodness.cpp for why C++.
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
struct CwCBlockBackward final : FormulaNode<CwCBlockBackward<kTriton>> {
  static constexpr const char* kOp = "cwc_block";
  SavedTensor p, idx, weight, bias, batch_mean, batch_var;
  int64_t num_classes = 0, height = 0, width = 0;
  bool pool = true, batch_stats = true;
  double eps = 0.0;

  static constexpr const char* kName = kTriton ? "ffops::TritonCwCBlockBackward" : "ffops::CwCBlockBackward";
  auto saved() { return std::tie(p, idx, weight, bias, batch_mean, batch_var); }
  auto attrs() { return std::tie(num_classes, height, width, pool, batch_stats, eps); }

  // grads: of y and g; returns the gradients of z, weight and bias
  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 6>& tensors,
                          const std::vector<bool>& /*needs*/) const {
    const at::Tensor &grad_y = grads[0], &grad_g = grads[1];
    if (!grad_y.defined() && !grad_g.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const auto& [saved_p, saved_idx, saved_weight, saved_bias, saved_mean, saved_var] = tensors;
    const Opt gy = grad_y.defined() ? Opt(grad_y.contiguous(at::MemoryFormat::ChannelsLast)) : std::nullopt;
    auto [dz, dweight, dbias] =
        bwd_op<kTriton>().call(gy, defined_or_none(grad_g), saved_p, saved_idx, saved_weight, saved_bias, saved_mean,
                               saved_var, num_classes, pool, batch_stats, eps, height, width);
    return {dz, dweight, dbias};
  }
};

template <bool kTriton>
Six cwc_block_fwd_autograd(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias, const Opt& mean,
                           const Opt& var, int64_t num_classes, bool pool, double eps) {
  at::Tensor y, g, p, idx, batch_mean, batch_var;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, g, p, idx, batch_mean, batch_var) =
        fwd_op<kTriton>().call(z, weight, bias, mean, var, num_classes, pool, eps);
  }
  if (auto node = make_backward_node<CwCBlockBackward<kTriton>>("cwc_block", z, weight, bias)) {
    node->num_classes = num_classes;
    node->pool = pool;
    node->batch_stats = !mean.has_value();
    node->eps = eps;
    node->height = z.size(2);
    node->width = z.size(3);
    torch::autograd::set_history(y, node);  // output 0
    torch::autograd::set_history(g, node);  // output 1; the rest are not differentiable
    node->p.save(p, /*is_output=*/false);
    node->idx.save(idx, /*is_output=*/false);
    node->weight.save(weight, /*is_output=*/false);
    node->bias.save(bias, /*is_output=*/false);
    node->batch_mean.save(batch_mean, /*is_output=*/false);
    node->batch_var.save(batch_var, /*is_output=*/false);
  }
  return {y, g, p, idx, batch_mean, batch_var};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("cwc_block_fwd", &ffops::cwc_block_fwd_autograd<false>);
  m.impl("triton_cwc_block_fwd", &ffops::cwc_block_fwd_autograd<true>);
}
