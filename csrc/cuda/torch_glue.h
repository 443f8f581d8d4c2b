// Shared by the torch-facing CUDA files (csrc/cuda/*_cuda.cpp): the map from torch's dtype to the
// kernels' FFDtype, the current stream, and the check of a launcher's returned error.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include <cuda_runtime_api.h>

#include "cuda/ff.h"  // FFDtype

namespace ffops::gpu {

// The kernels' storage type of a tensor dtype (float, double, half, bfloat16); `name` is the
// argument named in the error for any other dtype.
inline FFDtype ffdtype_of(at::ScalarType t, const char* name = "tensor") {
  switch (t) {
    case at::kFloat: return FFDtype::f32;
    case at::kDouble: return FFDtype::f64;
    case at::kHalf: return FFDtype::f16;
    case at::kBFloat16: return FFDtype::bf16;
    default: break;
  }
  TORCH_CHECK(false, "ffops: ", name, " has unsupported dtype ", t, " (float, double, half, bfloat16)");
  return FFDtype::f32;  // unreachable
}

// The stream torch is using on the current device (kernels launch there, ordered with torch's work).
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

inline void check_launch(cudaError_t err, const char* op) {
  TORCH_CHECK(err == cudaSuccess, "ffops: ", op, " CUDA kernel failed: ", cudaGetErrorString(err));
}

}  // namespace ffops::gpu
