// What the sparse layers' backward nodes (csrc/sparse_linear.cpp, csrc/sparse_conv.cpp) keep of the
// weight: its values and its transposed pattern (the CSC walk of the backward kernels).
#pragma once

#include <ATen/core/Tensor.h>

#include "autograd_node.h"

namespace ffops {

struct SavedSparseWeight {
  SavedTensor values, t_ptr, t_row, t_perm;

  void save(const at::Tensor& v, const at::Tensor& ptr, const at::Tensor& row, const at::Tensor& perm) {
    values.save(v, /*is_output=*/false);
    t_ptr.save(ptr, /*is_output=*/false);
    t_row.save(row, /*is_output=*/false);
    t_perm.save(perm, /*is_output=*/false);
  }

  // the node's saved() lists these after its own tensors
  auto saved() { return std::tie(values, t_ptr, t_row, t_perm); }
};

}  // namespace ffops
