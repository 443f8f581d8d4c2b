// The storage dtype of the CUDA kernels' data (every op group's launchers, csrc/cuda/<op>.h).
// Plain C++ with no torch and no CUDA headers, so both the kernels (.cu) and the torch-facing
// side (csrc/cuda/*_cuda.cpp, through torch_glue.h's dtype_of) can include it. The switch from a
// DType to a kernel's template instantiation is dispatch_dtype in csrc/cuda/device_common.cuh.
#pragma once

namespace ffops::gpu {

// Storage dtype of dense data: float32, float64, float16, bfloat16.
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// Bytes per element of `dtype`.
constexpr int dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f64: return 8;
    case DType::f16:
    case DType::bf16: return 2;
    case DType::f32: break;
  }
  return 4;
}

}  // namespace ffops::gpu
