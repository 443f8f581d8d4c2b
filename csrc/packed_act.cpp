// Autograd of the packed-code activations in C++ (packed_act_fwd; its backward kernel is
// packed_act_bwd), for every device their kernels run on (the Autograd alias key) and for both kernel
// sets that share their schemas (csrc/ops.cpp): the C++ kernels (ffops::<op>: csrc/cpu/packed_act.cpp,
// csrc/cuda/packed_act{.cu,_cuda.cpp}) and the Triton launchers (ffops::triton_<op>, registered from
// Python). The formula is written once, templated on the set (kTriton): its forward and backward call
// the kernels of the same set. A Python autograd formula (torch.library.register_autograd) costs tens
// of microseconds per call, several times the whole op on small tensors; this costs what a built-in
// op's does (a hand-written node, as torch's generated ops have).
//
// What autograd saves is the point of this op: packed_act_fwd saves only its packed codes (bits per
// element); backward: packed_act_bwd.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "autograd_node.h"
#include "common.h"

namespace ffops {
namespace {

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

// The backward node (csrc/autograd_node.h).
template <bool kTriton>
struct PackedActBackward final : FormulaNode<PackedActBackward<kTriton>> {
  static constexpr const char* kOp = "packed_act";
  SavedTensor codes;
  std::vector<double> levels;
  int64_t bits = 0;

  static constexpr const char* kName = kTriton ? "ffops::TritonPackedActBackward" : "ffops::PackedActBackward";
  auto saved() { return std::tie(codes); }
  auto attrs() { return std::tie(levels, bits); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 1>& tensors,
                          const std::vector<bool>& /*needs*/) const {
    at::Tensor dx;
    if (grads[0].defined()) dx = packed_act_bwd_op<kTriton>().call(grads[0].contiguous(), tensors[0], levels, bits);
    return {dx};
  }
};

template <bool kTriton>
std::tuple<at::Tensor, at::Tensor> packed_act_fwd_autograd(const at::Tensor& x, int64_t fn,
                                                           at::ArrayRef<double> borders, at::ArrayRef<double> levels,
                                                           int64_t bits) {
  at::Tensor y, codes;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, codes) = packed_act_fwd_op<kTriton>().call(x, fn, borders, levels, bits);
  }
  if (auto node = make_backward_node<PackedActBackward<kTriton>>("packed_act", x)) {
    node->levels = levels.vec();
    node->bits = bits;
    torch::autograd::set_history(y, node);  // y's gradient flows to node; codes are not differentiable
    node->codes.save(codes, /*is_output=*/false);
  }
  return {y, codes};
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("packed_act_fwd", &ffops::packed_act_fwd_autograd<false>);
  m.impl("triton_packed_act_fwd", &ffops::packed_act_fwd_autograd<true>);
}
