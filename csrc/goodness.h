// Argument checks of the goodness ops (goodness_fwd, row_scale, ff_loss_fwd, normalize_fwd,
// normalize_bwd; schemas in csrc/ops.cpp) beyond those of csrc/common.h, shared by their CPU
// registration (csrc/cpu/goodness.cpp) and CUDA registration (csrc/cuda/goodness_cuda.cpp). Their
// C++ autograd is csrc/goodness.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "common.h"

namespace ffops {

// normalize_bwd's arguments: grad_y and h rows of one shape, dtype and device; s and grad_s (if
// given) per-row statistics of h.
inline void check_normalize_bwd_args(const at::Tensor& grad_y, const std::optional<at::Tensor>& grad_s,
                                     const at::Tensor& h, const at::Tensor& s) {
  check_rows(h, "h");
  check_rows(grad_y, "grad_y");
  TORCH_CHECK(grad_y.device() == h.device(), "ffops: grad_y must be on ", h.device(), ", got ", grad_y.device());
  TORCH_CHECK(grad_y.sizes() == h.sizes() && grad_y.scalar_type() == h.scalar_type(),
              "ffops: grad_y must match h, got ", grad_y.sizes(), " ", grad_y.scalar_type(), " vs ", h.sizes(), " ",
              h.scalar_type());
  check_stat(s, h, "s");
  if (grad_s.has_value()) check_stat(*grad_s, h, "grad_s");
}

}  // namespace ffops
