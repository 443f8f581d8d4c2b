// Launchers of the packed-code activations' CUDA kernels (csrc/cuda/packed_act.cu): ReGELU2,
// ReSiLU2, Few-Bit. Plain C++: raw pointers, int64_t sizes, no torch headers, so packed_act.cu
// compiles without ATen. The torch-facing side (checks, allocation, stream) is
// csrc/cuda/packed_act_cuda.cpp; the math is csrc/ops.cpp and must match the CPU kernels,
// csrc/cpu/packed_act.cpp.
//
// Storage dtypes are ffops::gpu::DType (cuda/dtype.h). The compute type A is float (double for f64).
// All work is enqueued on `stream`; empty inputs launch nothing. The return value is the launch
// error (cudaGetLastError), cudaSuccess when nothing went wrong.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace ffops::gpu {

// y[i] = f_fn(x[i]) computed in A; code[i] = sum_j [A(x[i]) > A(borders[j])], packed `bits` bits per
// element: element i at bits bits*i .. of the little-endian bit stream in codes (ceil(n * bits / 8)
// bytes, unused high bits 0). x, y: n contiguous elements of `dtype`. borders: 2^bits - 1 values.
// fn: 0 gelu, 1 gelu_tanh, 2 silu, 3 tanh, 4 sigmoid, 5 softplus, 6 elu, 7 mish, 8 hardswish,
// 9 leaky_relu, 10 selu, 11 celu, 12 logsigmoid, 13 softsign, 14 relu6.
cudaError_t launch_packed_act_fwd(DType dtype, const void* x, int64_t n, int fn, const double* borders, int bits,
                                  void* y, uint8_t* codes, cudaStream_t stream);

// dx[i] = grad_y[i] * A(levels[code[i]]). grad_y, dx: n contiguous elements of `dtype`; codes as
// written by launch_packed_act_fwd; levels: 2^bits values.
cudaError_t launch_packed_act_bwd(DType dtype, const void* grad_y, const uint8_t* codes, int64_t n,
                                  const double* levels, int bits, void* dx, cudaStream_t stream);

}  // namespace ffops::gpu
