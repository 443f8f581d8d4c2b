// Launchers of the MS norms' CUDA kernels (csrc/cuda/ms_norm.cu): MS-LayerNorm / MS-RMSNorm, whose
// backward needs only the output y and rstd. Plain C++: raw pointers, int64_t sizes, no torch
// headers, so ms_norm.cu compiles without ATen. The torch-facing side (checks, allocation, stream) is
// csrc/cuda/ms_norm_cuda.cpp; the math is csrc/ops.cpp and must match the CPU kernels,
// csrc/cpu/ms_norm.cpp.
//
// Storage dtypes are ffops::gpu::DType (cuda/dtype.h). The compute type A is float (double for f64).
// All work is enqueued on `stream`; empty inputs launch nothing. The return value is the launch
// error (cudaGetLastError), cudaSuccess when nothing went wrong.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace ffops::gpu {

// Per row r of x [rows, k] (row stride ld, unit column stride): mean = center ? sum x / k : 0;
// rstd[r] = 1 / sqrt(sum (x - mean)^2 / k + eps); y = (x - mean) * rstd, contiguous [rows, k] of
// y_dtype. rstd: rows values of A (float; double for f64 x). f64 goes only to f64.
cudaError_t launch_ms_norm_fwd(DType x_dtype, DType y_dtype, const void* x, int64_t rows, int64_t k, int64_t ld,
                               double eps, bool center, void* y, void* rstd, cudaStream_t stream);

// dx = rstd * (grad_y - a - y * b), a = center ? mean(grad_y) : 0, b = mean(grad_y * y) per row.
// grad_y: [rows, k] of y_dtype, row stride ld_g. y: contiguous [rows, k]. rstd: rows values of A.
// dx: contiguous [rows, k] of dx_dtype.
cudaError_t launch_ms_norm_bwd(DType y_dtype, DType dx_dtype, const void* grad_y, int64_t ld_g, const void* y,
                               const void* rstd, int64_t rows, int64_t k, bool center, void* dx, cudaStream_t stream);

}  // namespace ffops::gpu
