// The plumbing of the C++ autograd formulas (csrc/<op>.cpp): backward nodes written as torch's
// generated ones are (make_backward_node; a torch::autograd::Function costs several microseconds more
// per call: its context, saved_data map and output wrapping), and how their backward calls the
// kernel ops (first_order_only).
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>

#include <string>

namespace ffops {

// A backward node NodeT whose gradients flow to `inputs` (an undefined input gets no edge), or null when
// no input needs a gradient (grad mode off, or none requires grad). The caller fills the node's saved
// state and attaches it to the differentiable outputs in order (torch::autograd::set_history). No
// formula here is forward-mode: a dual input is an error naming the op.
template <typename NodeT, typename... Inputs>
c10::intrusive_ptr<NodeT> make_backward_node(const char* op, const Inputs&... inputs) {
  if (!torch::autograd::compute_requires_grad(inputs...)) return {};
  TORCH_CHECK(!(torch::autograd::isFwGradDefined(inputs) || ...), "ffops: ", op, " has no forward-mode AD formula");
  auto node = c10::make_intrusive<NodeT>();
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
  return c10::make_intrusive<torch::autograd::DelayedError>(msg, static_cast<int64_t>(grads.size()))
      ->apply(std::move(grads));
}

}  // namespace ffops
