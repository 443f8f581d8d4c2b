// Shared by the torch-facing CUDA files of every op group (csrc/cuda/*_cuda.cpp): the map from torch's
// dtype to the kernels' DType (cuda/dtype.h), the check that an input is a CUDA tensor, the current
// stream, and the check of a launcher's returned error.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cuda_runtime_api.h>

#include "cuda/dtype.h"

namespace ffops::gpu {

// The kernels' storage type of a tensor dtype (float, double, half, bfloat16); `name` is the
// argument named in the error for any other dtype.
inline DType dtype_of(at::ScalarType t, const char* name = "tensor") {
  switch (t) {
    case at::kFloat: return DType::f32;
    case at::kDouble: return DType::f64;
    case at::kHalf: return DType::f16;
    case at::kBFloat16: return DType::bf16;
    default: break;
  }
  TORCH_CHECK(false, "ffops: ", name, " has unsupported dtype ", t, " (float, double, half, bfloat16)");
  return DType::f32;  // unreachable
}

inline void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), "ffops: ", name, " must be a CUDA tensor, got ", t.device());
}

// The stream torch is using on the current device (kernels launch there, ordered with torch's work).
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "ffops: ", op, " CUDA kernel failed: ", cudaGetErrorString(err));
}

}  // namespace ffops::gpu
