// Checks of the raw-pointer contract shared by the CPU and CUDA registrations of the FF ops
// (csrc/cpu/ff.cpp, csrc/cuda/ff_cuda.cpp). Arguments were validated at the Python boundary;
// these guard direct calls of torch.ops.ffops.* against a crash in a kernel.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace ffops {

// Per-row statistics are kept in the accumulation type of h.
inline at::ScalarType stat_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_rows(const at::Tensor& h, const char* name) {
  TORCH_CHECK(h.dim() == 2, "ffops: ", name, " must be 2-D [rows, features], got ", h.dim(), "-D");
  TORCH_CHECK(h.size(1) <= 1 || h.stride(1) == 1, "ffops: ", name,
              " must have a contiguous last dimension, got strides ", h.strides());
  TORCH_CHECK(at::isFloatingType(h.scalar_type()), "ffops: ", name, " must be floating point, got ",
              h.scalar_type());
}

inline void check_stat(const at::Tensor& v, const at::Tensor& h, const char* name) {
  TORCH_CHECK(v.device() == h.device(), "ffops: ", name, " must be on ", h.device(), ", got ", v.device());
  TORCH_CHECK(v.dim() == 1 && v.size(0) == h.size(0) && v.is_contiguous(), "ffops: ", name,
              " must be a contiguous vector of ", h.size(0), " per-row values, got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == stat_type(h.scalar_type()), "ffops: ", name, " must be ",
              stat_type(h.scalar_type()), ", got ", v.scalar_type());
}

inline at::Tensor empty_stat(const at::Tensor& h) {
  return at::empty({h.size(0)}, h.options().dtype(stat_type(h.scalar_type())));
}

}  // namespace ffops
