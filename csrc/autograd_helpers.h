// Helpers of the C++ autograd formulas (csrc/*_autograd.cpp).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymBool.h>

namespace ffops {

// A 2-D tensor with unit stride in its last dimension, copying only if needed (or unknown: sizes and
// strides may be symbolic under torch.compile).
inline at::Tensor rows_last_contiguous(const at::Tensor& t) {
  const bool unit = TORCH_GUARD_OR_FALSE(t.sym_size(1).sym_le(1)) || TORCH_GUARD_OR_FALSE(t.sym_stride(1).sym_eq(1));
  return unit ? t : t.contiguous();
}

}  // namespace ffops
