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
struct SparseConv2dBackward final : FormulaNode<SparseConv2dBackward> {
  static constexpr const char* kOp = "sparse_conv2d";
  SavedTensor x;
  SavedSparseWeight weight;
  std::vector<int64_t> kernel_size, stride, padding, dilation;

  static constexpr const char* kName = "ffops::SparseConv2dBackward";
  auto saved() { return std::tuple_cat(std::tie(x), weight.saved()); }
  auto attrs() { return std::tie(kernel_size, stride, padding, dilation); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 5>& tensors,
                          const std::vector<bool>& needs) const {
    const at::Tensor& grad_y = grads[0];
    if (!grad_y.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const auto& [saved_x, values, t_ptr, t_row, t_perm] = tensors;
    const bool need_dx = needs[0], need_dvalues = needs[1];
    at::Tensor dx, dvalues, dbias;
    if (need_dx || need_dvalues) {
      std::tie(dx, dvalues) = sparse_conv2d_bwd_op().call(grad_y, saved_x, values, t_ptr, t_row, t_perm, kernel_size,
                                                          stride, padding, dilation, need_dx, need_dvalues);
    }
    if (needs[2]) dbias = grad_y.sum({0, 2, 3});
    return {need_dx ? dx : at::Tensor(), need_dvalues ? dvalues : at::Tensor(), dbias};
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
    node->x.save(x, /*is_output=*/false);
    node->weight.save(values, t_ptr, t_row, t_perm);
  }
  return y;
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) { m.impl("sparse_conv2d_fwd", &ffops::sparse_conv2d_fwd_autograd); }
