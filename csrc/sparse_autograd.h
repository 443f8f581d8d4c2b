// What the sparse layers' backward nodes (csrc/sparse_linear.cpp, csrc/sparse_conv.cpp) keep of the
// weight: its values and its transposed pattern (the CSC walk of the backward kernels).
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/csrc/autograd/saved_variable.h>

namespace ffops {

struct SavedSparseWeight {
  torch::autograd::SavedVariable values, t_ptr, t_row, t_perm;

  void save(const at::Tensor& v, const at::Tensor& ptr, const at::Tensor& row, const at::Tensor& perm) {
    values = torch::autograd::SavedVariable(v, /*is_output=*/false);
    t_ptr = torch::autograd::SavedVariable(ptr, /*is_output=*/false);
    t_row = torch::autograd::SavedVariable(row, /*is_output=*/false);
    t_perm = torch::autograd::SavedVariable(perm, /*is_output=*/false);
  }

  void reset() {
    values.reset_data();
    t_ptr.reset_data();
    t_row.reset_data();
    t_perm.reset_data();
  }
};

}  // namespace ffops
