// Autograd of the packed-code activations in C++ (packed_act_fwd; its backward kernel is
// packed_act_bwd), for every device their kernels run on (the Autograd alias key) and for both kernel
// sets that share their schemas (csrc/ops.cpp): the C++ kernels (ffops::<op>: csrc/cpu/packed_act.cpp,
// csrc/cuda/packed_act{.cu,_cuda.cpp}) and the Triton launchers (ffops::triton_<op>, registered from
// Python). The formula is written once, templated on the set (kTriton): its forward and backward call
// the kernels of the same set. A Python autograd formula (torch.library.register_autograd) costs tens
// of microseconds per call, several times the whole op on small tensors; this costs what a built-in
// op's does.
//
// What autograd saves is the point of this op: packed_act_fwd saves only its packed codes (bits per
// element); backward: packed_act_bwd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "backward_dispatch.h"
#include "common.h"

namespace ffops {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Typed handles of the set's operators, looked up on first use (the Triton set's kernels are
// registered after this library loads).
template <bool kTriton>
const auto& packed_act_fwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t, at::ArrayRef<double>, at::ArrayRef<double>,
                                                 int64_t)>(op_name<kTriton>("packed_act_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& packed_act_bwd_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&, const at::Tensor&, at::ArrayRef<double>, int64_t)>(
      op_name<kTriton>("packed_act_bwd").c_str());
  return op;
}

template <bool kTriton>
class PackedAct : public torch::autograd::Function<PackedAct<kTriton>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, int64_t fn, std::vector<double> borders,
                               std::vector<double> levels, int64_t bits) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, codes] = packed_act_fwd_op<kTriton>().call(x, fn, borders, levels, bits);
    ctx->save_for_backward({codes});
    ctx->mark_non_differentiable({codes});
    ctx->set_materialize_grads(false);  // no zero-filled gradient for unused outputs
    ctx->saved_data["levels"] = std::move(levels);
    ctx->saved_data["bits"] = bits;
    return {y, codes};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const BackwardDispatchGuard below_autograd;
    const at::Tensor codes = ctx->get_saved_variables()[0];
    at::Tensor dx;
    if (grads[0].defined()) {
      dx = packed_act_bwd_op<kTriton>().call(grads[0].contiguous(), codes, ctx->saved_data["levels"].toDoubleVector(),
                                             ctx->saved_data["bits"].toInt());
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> packed_act_fwd_autograd(const at::Tensor& x, int64_t fn,
                                                           at::ArrayRef<double> borders, at::ArrayRef<double> levels,
                                                           int64_t bits) {
  auto out = PackedAct<kTriton>::apply(x, fn, borders.vec(), levels.vec(), bits);
  return {out[0], out[1]};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("packed_act_fwd", &ffops::packed_act_fwd_autograd<false>);
  m.impl("triton_packed_act_fwd", &ffops::packed_act_fwd_autograd<true>);
}
