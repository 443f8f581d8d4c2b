// The sparse linear layer as one op with its autograd in C++ (sparse_linear; its kernels are
// sparse_linear_fwd / sparse_linear_bwd), for every device the kernels run on and for both kernel sets
// that share their schemas (csrc/ops.cpp): the C++ kernels (ffops::<op>: csrc/cpu/sparse_linear.cpp,
// csrc/cuda/sparse_linear{.cu,_cuda.cpp}) and the Triton launchers (ffops::triton_<op>, registered from
// Python). Written once, templated on the set (kTriton).
//
// The kernels take activations feature-major (xt [in, B] contiguous); the layer takes and returns
// them batch-major, so the transposes in and out are part of the op: a free view when x already is a
// transposed view of a contiguous matrix (the output then is one too, so chains of sparse layers never
// copy), else a copy (on CPU by transpose_2d, csrc/cpu/transpose.cpp). The same math is the op's
// kernel below autograd (CompositeExplicitAutograd: inference mode, fake tensors) and inside the
// Autograd kernel, which adds a hand-written node (csrc/autograd_node.h) saving xt, the values and
// the transposed pattern.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "autograd_node.h"
#include "common.h"
#include "sparse_autograd.h"

namespace ffops {
namespace {

using torch::autograd::variable_list;
using Opt = std::optional<at::Tensor>;

template <bool kTriton>
const auto& fwd_op() {
  static const auto op =
      find_op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const Opt&)>(
          op_name<kTriton>("sparse_linear_fwd").c_str());
  return op;
}

template <bool kTriton>
const auto& bwd_op() {
  static const auto op =
      find_op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                 const at::Tensor&, const at::Tensor&, const at::Tensor&, bool, bool)>(
          op_name<kTriton>("sparse_linear_bwd").c_str());
  return op;
}

const auto& transpose_2d_op() {
  static const auto op = find_op<at::Tensor(const at::Tensor&)>("ffops::transpose_2d");
  return op;
}

// t [r, c] as a contiguous [c, r] matrix: a free view when t is the transpose of a contiguous matrix.
at::Tensor transposed(const at::Tensor& t) {
  if (t.t().is_contiguous()) return t.t();
  if (t.is_cpu()) return transpose_2d_op().call(t.contiguous());
  return t.t().contiguous();
}

// t is stored as the transpose of a contiguous matrix (the kernels' layout), and not contiguous too.
bool is_feature_major(const at::Tensor& t) { return t.t().is_contiguous() && !t.is_contiguous(); }

// y [B, N] from yt [N, B]: the view yt.t() for a feature-major x, else a contiguous copy.
at::Tensor batch_major(const at::Tensor& yt, bool feature_major) { return feature_major ? yt.t() : transposed(yt); }

template <bool kTriton>
at::Tensor sparse_linear_math(const at::Tensor& x, const at::Tensor& values, const at::Tensor& crow,
                              const at::Tensor& col, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                              const Opt& bias) {
  return batch_major(fwd_op<kTriton>().call(transposed(x), values.contiguous(), crow, col, bias), is_feature_major(x));
}

// Gradients of x, values and bias, each only when its edge needs it.
template <bool kTriton>
struct SparseLinearBackward final : FormulaNode<SparseLinearBackward<kTriton>> {
  static constexpr const char* kOp = "sparse_linear";
  SavedTensor xt;
  SavedSparseWeight weight;
  bool feature_major = false;

  static constexpr const char* kName = kTriton ? "ffops::TritonSparseLinearBackward" : "ffops::SparseLinearBackward";
  auto saved() { return std::tuple_cat(std::tie(xt), weight.saved()); }
  auto attrs() { return std::tie(feature_major); }

  variable_list gradients(const variable_list& grads, const std::array<at::Tensor, 5>& tensors,
                          const std::vector<bool>& needs) const {
    if (!grads[0].defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const auto& [saved_xt, values, t_ptr, t_row, t_perm] = tensors;
    const bool need_dx = needs[0], need_dvalues = needs[1];
    const at::Tensor dyt = transposed(grads[0]);
    at::Tensor dx, dvalues, dbias;
    if (need_dx || need_dvalues) {
      at::Tensor dxt;
      std::tie(dxt, dvalues) =
          bwd_op<kTriton>().call(dyt, saved_xt, values.contiguous(), t_ptr, t_row, t_perm, need_dx, need_dvalues);
      if (need_dx) dx = batch_major(dxt, feature_major);
      if (!need_dvalues) dvalues = at::Tensor();
    }
    if (needs[2]) dbias = dyt.sum({1}, /*keepdim=*/false, stat_type(dyt.scalar_type())).to(dyt.scalar_type());
    return {dx, dvalues, dbias};
  }
};

template <bool kTriton>
at::Tensor sparse_linear_autograd(const at::Tensor& x, const at::Tensor& values, const at::Tensor& crow,
                                  const at::Tensor& col, const at::Tensor& t_ptr, const at::Tensor& t_row,
                                  const at::Tensor& t_perm, const Opt& bias) {
  const bool feature_major = is_feature_major(x);
  at::Tensor xt, y;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    xt = transposed(x);
    y = batch_major(fwd_op<kTriton>().call(xt, values.contiguous(), crow, col, bias), feature_major);
  }
  const at::Tensor bias_or_undefined = bias.value_or(at::Tensor());
  if (auto node = make_backward_node<SparseLinearBackward<kTriton>>("sparse_linear", x, values, bias_or_undefined)) {
    node->feature_major = feature_major;
    torch::autograd::set_history(y, node);
    node->xt.save(xt, /*is_output=*/false);
    node->weight.save(values, t_ptr, t_row, t_perm);
  }
  return y;
}

}  // namespace
}  // namespace ffops

TORCH_LIBRARY_IMPL(ffops, CompositeExplicitAutograd, m) {
  m.impl("sparse_linear", &ffops::sparse_linear_math<false>);
  m.impl("triton_sparse_linear", &ffops::sparse_linear_math<true>);
}

TORCH_LIBRARY_IMPL(ffops, Autograd, m) {
  m.impl("sparse_linear", &ffops::sparse_linear_autograd<false>);
  m.impl("triton_sparse_linear", &ffops::sparse_linear_autograd<true>);
}
