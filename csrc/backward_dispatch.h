// BackwardDispatchGuard: how the C++ backward formulas (csrc/<op>.cpp) call their kernel ops.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/grad_mode.h>

#include <optional>

namespace ffops {

// Put first in a C++ backward formula: its kernel ops then dispatch straight to the device kernels,
// past the Autograd key, whose fallback for ops without a formula of their own boxes every call (a
// few microseconds each). Not when the backward is itself differentiated (create_graph: grad mode on),
// where autograd must see those calls.
class BackwardDispatchGuard {
 public:
  BackwardDispatchGuard() {
    if (!at::GradMode::is_enabled()) below_autograd_.emplace();
  }

 private:
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_autograd_;
};

}  // namespace ffops
