// Autograd of the MS norms in C++ (ms_norm_fwd; its backward kernel is ms_norm_bwd), for every device
// their kernels run on (the Autograd alias key) and for both kernel sets that share their schemas
// (csrc/ops.cpp): the C++ kernels (ffops::<op>: csrc/cpu/ms_norm.cpp, csrc/cuda/ms_norm{.cu,_cuda.cpp})
// and the Triton launchers (ffops::triton_<op>, registered from Python). The formula is written once,
// templated on the set (kTriton): its forward and backward call the kernels of the same set. A Python
// autograd formula (torch.library.register_autograd) costs tens of microseconds per call, several
// times the whole op on small tensors; this costs what a built-in op's does.
//
// What autograd saves is the point of this op: ms_norm_fwd saves only its outputs y and rstd (y is
// the tensor the caller hands on, so the next linear layer's saved input is the same storage);
// backward: ms_norm_bwd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
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

template <bool kTriton>
class MSNorm : public torch::autograd::Function<MSNorm<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, double eps, bool center,
                               std::optional<at::ScalarType> out_dtype) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, rstd] = ms_norm_fwd_op<kTriton>().call(x, eps, center, out_dtype);
    ctx->save_for_backward({y, rstd});
    ctx->mark_non_differentiable({rstd});
    ctx->set_materialize_grads(false);  // no zero-filled gradient for unused outputs
    ctx->saved_data["center"] = center;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return {y, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &y = saved[0], &rstd = saved[1];
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    at::Tensor dx;
    if (!grads[0].defined()) {
      // no gradient reached y
    } else if (TORCH_GUARD_OR_FALSE(y.sym_numel().sym_eq(0))) {
      dx = at::empty_symint(y.sym_sizes(), y.options().dtype(x_dtype));  // an empty gradient may carry any strides
    } else {
      dx = ms_norm_bwd_op<kTriton>().call(rows_operand(grads[0]), y, rstd, ctx->saved_data["center"].toBool(), x_dtype);
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> ms_norm_fwd_autograd(const at::Tensor& x, double eps, bool center,
                                                        std::optional<at::ScalarType> out_dtype) {
  auto out = MSNorm<kTriton>::apply(x, eps, center, out_dtype);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("ms_norm_fwd", &ffops::ms_norm_fwd_autograd<false>);
  m.impl("triton_ms_norm_fwd", &ffops::ms_norm_fwd_autograd<true>);
}
