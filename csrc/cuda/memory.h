// Launchers of the memory-saving CUDA kernels (csrc/cuda/memory.cu): packed-code activations and
// MS norms. Plain C++: raw pointers, int64_t sizes, no torch headers, so memory.cu compiles without
// ATen. The torch-facing side (checks, allocation, stream) is csrc/cuda/memory_cuda.cpp; the math is
// csrc/ops.cpp and must match csrc/cpu/activations.cpp and csrc/cpu/norms.cpp.
//
// Storage dtypes are ffops::gpu::FFDtype (cuda/ff.h). The compute type A is float (double for f64).
// All work is enqueued on `stream`; empty inputs launch nothing. The return value is the launch
// error (cudaGetLastError), cudaSuccess when nothing went wrong.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/ff.h"

namespace ffops::gpu {

// y[i] = f_fn(x[i]) computed in A; code[i] = sum_j [A(x[i]) > A(borders[j])], packed `bits` bits per
// element: element i at bits bits*i .. of the little-endian bit stream in codes (ceil(n * bits / 8)
// bytes, unused high bits 0). x, y: n contiguous elements of `dtype`. borders: 2^bits - 1 values.
// fn: 0 gelu, 1 gelu_tanh, 2 silu, 3 tanh, 4 sigmoid, 5 softplus, 6 elu, 7 mish.
cudaError_t launch_packed_act_fwd(FFDtype dtype, const void* x, int64_t n, int fn, const double* borders, int bits,
                                  void* y, uint8_t* codes, cudaStream_t stream);

// dx[i] = grad_y[i] * A(levels[code[i]]). grad_y, dx: n contiguous elements of `dtype`; codes as
// written by launch_packed_act_fwd; levels: 2^bits values.
cudaError_t launch_packed_act_bwd(FFDtype dtype, const void* grad_y, const uint8_t* codes, int64_t n,
                                  const double* levels, int bits, void* dx, cudaStream_t stream);

// Per row r of x [rows, k] (row stride ld, unit column stride): mean = center ? sum x / k : 0;
// rstd[r] = 1 / sqrt(sum (x - mean)^2 / k + eps); y = (x - mean) * rstd, contiguous [rows, k] of
// y_dtype. rstd: rows values of A (float; double for f64 x). f64 goes only to f64.
cudaError_t launch_ms_norm_fwd(FFDtype x_dtype, FFDtype y_dtype, const void* x, int64_t rows, int64_t k, int64_t ld,
                               double eps, bool center, void* y, void* rstd, cudaStream_t stream);

// dx = rstd * (grad_y - a - y * b), a = center ? mean(grad_y) : 0, b = mean(grad_y * y) per row.
// grad_y: [rows, k] of y_dtype, row stride ld_g. y: contiguous [rows, k]. rstd: rows values of A.
// dx: contiguous [rows, k] of dx_dtype.
cudaError_t launch_ms_norm_bwd(FFDtype y_dtype, FFDtype dx_dtype, const void* grad_y, int64_t ld_g, const void* y,
                               const void* rstd, int64_t rows, int64_t k, bool center, void* dx,
                               cudaStream_t stream);

}  // namespace ffops::gpu
