// Autograd of the memory-saving ops in C++, for every device their kernels run on (the Autograd
// alias key). A Python autograd formula (torch.library.register_autograd) costs tens of
// microseconds per call, several times the whole op on small tensors; these cost what a built-in
// op's does. The Triton kernel set keeps its Python formula (ffops/ops/_memory_library.py).
//
// What autograd saves is the point of this family:
//   packed_act_fwd saves only its packed codes (bits per element); backward: packed_act_bwd.
//   ms_norm_fwd saves only its outputs y and rstd (y is the tensor the caller hands on, so the next
//   linear layer's saved input is the same storage); backward: ms_norm_bwd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "autograd_helpers.h"

namespace ffops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

const auto& packed_act_fwd_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ffops::packed_act_fwd", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, at::ArrayRef<double>,
                                                    at::ArrayRef<double>, int64_t)>();
  return op;
}

const auto& packed_act_bwd_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ffops::packed_act_bwd", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::ArrayRef<double>, int64_t)>();
  return op;
}

const auto& ms_norm_fwd_op() {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("ffops::ms_norm_fwd", "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double, bool,
                                                                       std::optional<at::ScalarType>)>();
  return op;
}

const auto& ms_norm_bwd_op() {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("ffops::ms_norm_bwd", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, at::ScalarType)>();
  return op;
}

class PackedAct : public torch::autograd::Function<PackedAct> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, int64_t fn, std::vector<double> borders,
                               std::vector<double> levels, int64_t bits) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, codes] = packed_act_fwd_op().call(x, fn, borders, levels, bits);
    ctx->save_for_backward({codes});
    ctx->mark_non_differentiable({codes});
    ctx->saved_data["levels"] = std::move(levels);
    ctx->saved_data["bits"] = bits;
    return {y, codes};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor codes = ctx->get_saved_variables()[0];
    at::Tensor dx;
    if (grads[0].defined()) {
      dx = packed_act_bwd_op().call(grads[0].contiguous(), codes, ctx->saved_data["levels"].toDoubleVector(),
                                    ctx->saved_data["bits"].toInt());
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class MSNorm : public torch::autograd::Function<MSNorm> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, double eps, bool center,
                               std::optional<at::ScalarType> out_dtype) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, rstd] = ms_norm_fwd_op().call(x, eps, center, out_dtype);
    ctx->save_for_backward({y, rstd});
    ctx->mark_non_differentiable({rstd});
    ctx->saved_data["center"] = center;
    ctx->saved_data["x_dtype"] = static_cast<int64_t>(x.scalar_type());
    return {y, rstd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &y = saved[0], &rstd = saved[1];
    const auto x_dtype = static_cast<at::ScalarType>(ctx->saved_data["x_dtype"].toInt());
    at::Tensor dx;
    if (!grads[0].defined()) {
      // no gradient reached y
    } else if (TORCH_GUARD_OR_FALSE(y.sym_numel().sym_eq(0))) {
      dx = at::empty_symint(y.sym_sizes(), y.options().dtype(x_dtype));  // an empty gradient may carry any strides
    } else {
      dx = ms_norm_bwd_op().call(rows_last_contiguous(grads[0]), y, rstd, ctx->saved_data["center"].toBool(),
                                 x_dtype);
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> packed_act_fwd_autograd(const at::Tensor& x, int64_t fn,
                                                           at::ArrayRef<double> borders, at::ArrayRef<double> levels,
                                                           int64_t bits) {
  auto out = PackedAct::apply(x, fn, borders.vec(), levels.vec(), bits);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> ms_norm_fwd_autograd(const at::Tensor& x, double eps, bool center,
                                                        std::optional<at::ScalarType> out_dtype) {
  auto out = MSNorm::apply(x, eps, center, out_dtype);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("packed_act_fwd", &ffops::packed_act_fwd_autograd);
  m.impl("ms_norm_fwd", &ffops::ms_norm_fwd_autograd);
}
