// Autograd of the direct sparse convolution in C++ (sparse_conv2d_fwd; its backward kernel is
// sparse_conv2d_bwd, both CPU only: csrc/cpu/sparse_conv.cpp), a hand-written node
// (csrc/autograd_node.h). It saves the input and the weight's transposed pattern; the backward
// rebuilds the input's padded flat layout from x rather than keeping it (it is larger than x).
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "autograd_node.h"
#include "common.h"
#include "sparse_autograd.h"

namespace ffops {
namespace {

using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;

const auto& sparse_conv2d_fwd_op() {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         const at::Tensor&, const at::Tensor&, const Opt&, at::IntArrayRef, at::IntArrayRef,
                         at::IntArrayRef, at::IntArrayRef)>("ffops::sparse_conv2d_fwd");
  return op;
}

const auto& sparse_conv2d_bwd_op() {
  static const auto op = find_op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, at::IntArrayRef, bool, bool)>("ffops::sparse_conv2d_bwd");
  return op;
}

// Gradients of x, values and bias; each only when its edge needs it.
struct SparseConv2dBackward final : torch::autograd::Node {
  torch::autograd::SavedVariable x;
  SavedSparseWeight weight;
  std::vector<int64_t> kernel_size, stride, padding, dilation;

  std::string name() const override { return "ffops::SparseConv2dBackward"; }

  void release_variables() override {
    x.reset_data();
    weight.reset();
  }

  variable_list apply(variable_list&& grads) override {
    return first_order_only("sparse_conv2d", [&]() -> variable_list {
      const at::Tensor& grad_y = grads[0];
      if (!grad_y.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
      const bool need_dx = task_should_compute_output(0), need_dvalues = task_should_compute_output(1);
      at::Tensor dx, dvalues, dbias;
      if (need_dx || need_dvalues) {
        std::tie(dx, dvalues) = sparse_conv2d_bwd_op().call(
            grad_y, x.unpack(), weight.values.unpack(), weight.t_ptr.unpack(), weight.t_row.unpack(),
            weight.t_perm.unpack(), kernel_size, stride, padding, dilation, need_dx, need_dvalues);
      }
      if (task_should_compute_output(2)) dbias = grad_y.sum({0, 2, 3});
      return {need_dx ? dx : at::Tensor(), need_dvalues ? dvalues : at::Tensor(), dbias};
    });
  }
};

at::Tensor sparse_conv2d_fwd_autograd(const at::Tensor& x, const at::Tensor& values, const at::Tensor& crow,
                                      const at::Tensor& col, const at::Tensor& t_ptr, const at::Tensor& t_row,
                                      const at::Tensor& t_perm, const Opt& bias, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    y = sparse_conv2d_fwd_op().call(x, values, crow, col, t_ptr, t_row, t_perm, bias, kernel_size, stride, padding,
                                    dilation);
  }
  const at::Tensor bias_or_undefined = bias.value_or(at::Tensor());
  if (auto node = make_backward_node<SparseConv2dBackward>("sparse_conv2d", x, values, bias_or_undefined)) {
    node->kernel_size = kernel_size.vec();
    node->stride = stride.vec();
    node->padding = padding.vec();
    node->dilation = dilation.vec();
    torch::autograd::set_history(y, node);
    node->x = torch::autograd::SavedVariable(x, /*is_output=*/false);
    node->weight.save(values, t_ptr, t_row, t_perm);
  }
  return y;
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) { m.impl("sparse_conv2d_fwd", &ffops::sparse_conv2d_fwd_autograd); }
