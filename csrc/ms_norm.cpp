// Autograd of the MS norms in C++ (ms_norm_fwd; its backward kernel is ms_norm_bwd), for every device
// their kernels run on (the Autograd alias key) and for both kernel sets that share their schemas
// (csrc/ops.cpp): the C++ kernels (ffops::<op>: csrc/cpu/ms_norm.cpp, csrc/cuda/ms_norm{.cu,_cuda.cpp})
// and the Triton launchers (ffops::triton_<op>, registered from Python). The formula is written once,
// templated on the set (kTriton): its forward and backward call the kernels of the same set. A Python
// autograd formula (torch.library.register_autograd) costs tens of microseconds per call, several
// times the whole op on small tensors; this costs what a built-in op's does (a hand-written node, as
// torch's generated ops have).
//
// What autograd saves is the point of this op: ms_norm_fwd saves only its outputs y and rstd (y is
// the tensor the caller hands on, so the next linear layer's saved input is the same storage);
// backward: ms_norm_bwd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd_node.h"
#include "common.h"

namespace ffops {
namespace {

using torch::autograd::variable_list;

// Typed handles of the set's operators, looked up on first use (the Triton set's kernels are
// registered after this library loads).
template <bool kTriton>
const auto& ms_norm_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, bool, std::optional<at::ScalarType>)>(
          op_name<kTriton>("ms_norm_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& ms_norm_bwd_op() {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, at::ScalarType)>(
          op_name<kTriton>("ms_norm_bwd").c_str());
  return op;
}

// The backward node (csrc/autograd_node.h).
template <bool kTriton>
struct MSNormBackward final : FormulaNode<MSNormBackward<kTriton>> {
  static constexpr const char* kOp = "ms_norm";
  SavedTensor y, rstd;
  bool center = true;
  at::ScalarType x_dtype = at::kFloat;

  static constexpr const char* kName = kTriton ? "ffops::TritonMSNormBackward" : "ffops::MSNormBackward";
  auto saved() { return std::tie(y, rstd); }
  auto attrs() { return std::tie(center, x_dtype); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 2>& tensors,
                          const std::vector<bool>& /*needs*/) const {
    const auto& [saved_y, saved_rstd] = tensors;
    at::Tensor dx;
    if (!grads[0].defined()) {
      // no gradient reached y
    } else if (TORCH_GUARD_OR_FALSE(saved_y.sym_numel().sym_eq(0))) {
      dx = at::empty_symint(saved_y.sym_sizes(), saved_y.options().dtype(x_dtype));  // any strides will do
    } else {
      dx = ms_norm_bwd_op<kTriton>().call(rows_operand(grads[0]), saved_y, saved_rstd, center, x_dtype);
    }
    return {dx};
  }
};

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> ms_norm_fwd_autograd(const at::Tensor& x, double eps, bool center,
                                                        std::optional<at::ScalarType> out_dtype) {
  at::Tensor y, rstd;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, rstd) = ms_norm_fwd_op<kTriton>().call(x, eps, center, out_dtype);
  }
  if (auto node = make_backward_node<MSNormBackward<kTriton>>("ms_norm", x)) {
    node->center = center;
    node->x_dtype = x.scalar_type();
    torch::autograd::set_history(y, node);  // y's gradient flows to node; rstd is not differentiable
    node->y.save(y, /*is_output=*/true);
    node->rstd.save(rstd, /*is_output=*/false);
  }
  return {y, rstd};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("ms_norm_fwd", &ffops::ms_norm_fwd_autograd<false>);
  m.impl("triton_ms_norm_fwd", &ffops::ms_norm_fwd_autograd<true>);
}
