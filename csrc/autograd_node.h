// The plumbing of the C++ autograd formulas (csrc/<op>.cpp): backward nodes written as torch's
// generated ones are (make_backward_node; a torch::autograd::Function costs several microseconds more
// per call: its context, saved_data map and output wrapping), and how their backward calls the
// kernel ops (first_order_only). It is also the one place that knows how the torch it is built against
// holds its nodes (NodePtr, make_node): supported torch releases differ there.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>

#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace ffops {

// torch up to 2.11 owns autograd nodes through std::shared_ptr (Node is an enable_shared_from_this and
// set_history takes a shared_ptr); later releases make Node an intrusive_ptr_target and take an
// intrusive_ptr. Told by the type itself, not by a version number.
inline constexpr bool kIntrusiveNodes = std::is_base_of_v<c10::intrusive_ptr_target, torch::autograd::Node>;

template <typename NodeT>
using NodePtr = std::conditional_t<kIntrusiveNodes, c10::intrusive_ptr<NodeT>, std::shared_ptr<NodeT>>;

// A new node, held the way this torch holds nodes.
template <typename NodeT, typename... Args>
NodePtr<NodeT> make_node(Args&&... args) {
  if constexpr (kIntrusiveNodes) {
    return c10::make_intrusive<NodeT>(std::forward<Args>(args)...);
  } else {
    return std::make_shared<NodeT>(std::forward<Args>(args)...);
  }
}

// A backward node NodeT whose gradients flow to `inputs` (an undefined input gets no edge), or null when
// no input needs a gradient (grad mode off, or none requires grad). The caller fills the node's saved
// state and attaches it to the differentiable outputs in order (torch::autograd::set_history). No
// formula here is forward-mode: a dual input is an error naming the op.
template <typename NodeT, typename... Inputs>
NodePtr<NodeT> make_backward_node(const char* op, const Inputs&... inputs) {
  if (!torch::autograd::compute_requires_grad(inputs...)) return {};
  TORCH_CHECK(!(torch::autograd::isFwGradDefined(inputs) || ...), "ffops: ", op, " has no forward-mode AD formula");
  auto node = make_node<NodeT>();
  node->set_next_edges(torch::autograd::collect_next_edges(inputs...));
  return node;
}

// The body of every backward formula here (all are first-order only: no kernel op has a derivative of
// its own). compute() (returning the gradients) runs past the Autograd key, whose fallback for ops
// without a formula would box every call (a few microseconds each). Under create_graph (grad mode on) it runs without
// recording, and its gradients are handed on as @once_differentiable does: through a node that raises if a second
// backward reaches it, instead of through kernel ops that autograd cannot differentiate (whose fallback would warn and
// give wrong second derivatives).
template <typename Compute>
torch::autograd::variable_list first_order_only(const char* op, const Compute& compute) {
  if (!at::GradMode::is_enabled()) {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return compute();
  }
  torch::autograd::variable_list grads;
  {
    const at::NoGradGuard no_grad;
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    grads = compute();
  }
  for (auto& g : grads) {
    if (g.defined()) g = g.detach().requires_grad_(true);
  }
  const std::string msg = std::string("ffops: the backward of ") + op +
                          " is first-order only: a second backward through it (create_graph=True) is not supported";
  return make_node<torch::autograd::DelayedError>(msg, static_cast<int64_t>(grads.size()))->apply(std::move(grads));
}

// A tensor a node saves for its backward, and whether it is an output of the node's forward (an output is
// unpacked with the node, which it does not hold, to avoid a reference cycle).
struct SavedTensor {
  torch::autograd::SavedVariable var;
  bool is_output = false;

  void save(const at::Tensor& t, bool output) {
    var = torch::autograd::SavedVariable(t, output);
    is_output = output;
  }
};

// The base of every backward node here. Derived lists its state once and writes its formula once:
//   static constexpr const char* kOp;                        the op's name, for messages
//   static constexpr const char* kName;                      the node's name (grad_fn.name())
//   auto saved() { return std::tie(a, b); }                  its SavedTensors
//   auto attrs() { return std::tie(x, y); }                  the other values the formula reads
//   variable_list gradients(const variable_list& grads, const std::array<at::Tensor, N>& tensors,
//                           const std::vector<bool>& needs) const;
// where tensors are the saved tensors unpacked, in saved() order, and needs[i] says whether the gradient of
// the i-th input is wanted. From these the base gives:
// - apply: every saved tensor unpacked exactly once, before the formula and outside its dispatch guards, so
//   a saved-tensor hook that recomputes the forward (torch.utils.checkpoint) records it with autograd on;
// - compiled autograd (torch._dynamo.compiled_autograd): compiled_args names the node's saved tensors and
//   values (the cache key), apply_with_saved puts the formula into the graph as one traceable function of
//   (grads, saved tensors, values, needs), bound once per node type as torch's generated nodes are.
template <typename Derived>
struct FormulaNode : torch::autograd::Node {
  std::string name() const override { return Derived::kName; }

  void release_variables() override {
    std::apply([](auto&... t) { (t.var.reset_data(), ...); }, self().saved());
  }

  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    std::apply([&](const auto&... t) { (args.collect(t.var, t.is_output), ...); }, self().saved());
    std::apply([&](const auto&... a) { (args.collect(a), ...); }, self().attrs());
  }

  torch::autograd::variable_list apply_with_saved(const torch::autograd::variable_list& grads,
                                                  torch::dynamo::autograd::SwapSavedVariables& swap) override {
    std::apply([&](auto&... t) { (swap.before(t.var), ...); }, self().saved());
    std::apply([&](auto&... a) { (swap.before(a), ...); }, self().attrs());

    torch::dynamo::autograd::PackedArgs packed;
    std::apply([&](auto&... t) { (packed.pack(t.var.unpack()), ...); }, self().saved());  // the swapped-in proxies
    std::apply([&](auto&... a) { (packed.pack(a), ...); }, self().attrs());
    packed.pack(needs_input_grad());
    const auto& args = packed.vec();

    const auto& compiler = torch::dynamo::autograd::getPyCompilerInterface();
    static const bool bound = [&] {
      std::vector<at::TypePtr> schema;
      for (const auto& arg : args) schema.push_back(arg.isTensor() ? at::TensorType::get() : arg.type());
      compiler->bind_function(swap.get_py_compiler(), functional_name(), &functional, schema);
      return true;
    }();
    (void)bound;
    using Metadata = std::vector<std::optional<torch::autograd::InputMetadata>>;
    const auto outputs_metadata = torch::dynamo::autograd::IValuePacker<Metadata>::pack(
        torch::dynamo::autograd::get_input_metadata(next_edges()));
    auto result = compiler->call_function(swap.get_py_compiler(), "apply_functional", functional_name(), grads, args,
                                          outputs_metadata);

    std::apply([&](auto&... t) { (swap.after(t.var), ...); }, self().saved());
    std::apply([&](auto&... a) { (swap.after(a), ...); }, self().attrs());
    return result;
  }

 protected:
  torch::autograd::variable_list apply(torch::autograd::variable_list&& grads) override {
    const auto tensors = std::apply(
        [this](const auto&... t) {
          return std::array<at::Tensor, sizeof...(t)>{t.var.unpack(t.is_output ? getptr() : nullptr)...};
        },
        self().saved());
    const auto needs = needs_input_grad();
    return first_order_only(Derived::kOp, [&] { return self().gradients(grads, tensors, needs); });
  }

 private:
  // saved() and attrs() are written once, non-const; the const members here only read through them
  Derived& self() const { return const_cast<Derived&>(static_cast<const Derived&>(*this)); }

  std::vector<bool> needs_input_grad() const {
    std::vector<bool> needs(num_outputs());
    for (size_t i = 0; i < needs.size(); ++i) needs[i] = task_should_compute_output(i);
    return needs;
  }

  // a Python identifier unique per node type (the C++ and Triton sets' nodes differ): ffops::X -> ffops_X
  static std::string functional_name() {
    std::string id = Derived::kName;
    std::replace(id.begin(), id.end(), ':', '_');
    return id;
  }

  // The formula as compiled autograd calls it: (grads, [saved tensors..., values..., needs]) -> gradients.
  static torch::autograd::variable_list functional(const torch::autograd::variable_list& grads,
                                                   const std::vector<c10::IValue>& args) {
    torch::dynamo::autograd::PackedArgs packed(args);
    Derived node;
    const auto tensors = std::apply(
        [&](const auto&... t) {
          return std::array<at::Tensor, sizeof...(t)>{(static_cast<void>(t), packed.template unpack<at::Tensor>())...};
        },
        node.saved());
    std::apply([&](auto&... a) { ((a = packed.template unpack<std::decay_t<decltype(a)>>()), ...); }, node.attrs());
    const auto needs = packed.template unpack<std::vector<bool>>();
    return first_order_only(Derived::kOp, [&] { return node.gradients(grads, tensors, needs); });
  }
};

}  // namespace ffops
