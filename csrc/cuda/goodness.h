// Launchers of the goodness ops' CUDA kernels (csrc/cuda/goodness.cu): goodness, row scaling, FF
// loss and length normalization. Plain C++: raw pointers, int64_t sizes and strides, no torch
// headers, so goodness.cu compiles without ATen. The torch-facing side (checks, allocation, stream)
// is csrc/cuda/goodness_cuda.cpp; the math is csrc/ops.cpp and must match the CPU kernels,
// csrc/cpu/goodness.cpp.
//
// Common contract:
//  * `h` (and `grad_y`) is a row-major [rows, k] matrix whose last dimension is contiguous;
//    row r starts at element r * ld (ld >= 0, any value; 16-byte loads are used only when every
//    pointer is 16-byte aligned and every row stride is a multiple of 16 bytes).
//  * Per-row statistics (g, loss, s, coef, target, grad_s) are contiguous vectors of `rows`
//    values of the "opmath" type: float for f32/f16/bf16 data, double for f64 data.
//  * Dense outputs (out, y, dh) are contiguous [rows, k] of the data dtype (row stride k).
//  * All work is enqueued on `stream`; rows == 0 launches nothing. The return value is the
//    launch error (cudaGetLastError), cudaSuccess when nothing went wrong.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"  // DType: storage dtype of h / grad_y / dense outputs

namespace ffops::gpu {

// g[r] = scale * sum_k h[r, k]^2.
// h: [rows, k], row stride ld. g: rows opmath values.
cudaError_t launch_goodness_fwd(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, double scale, void* g,
                                cudaStream_t stream);

// out[r, k] = coef[r] * h[r, k].
// h: [rows, k], row stride ld. coef: rows opmath values. out: contiguous [rows, k], dtype of h.
cudaError_t launch_row_scale(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, const void* coef,
                             void* out, cudaStream_t stream);

// g[r] = scale * sum_k h[r, k]^2;  z = coef * (t_r - g[r]), t_r = target ? target[r] : theta;
// loss[r] = max(z, 0) + log1p(exp(-|z|))  (NaN propagates).
// h: [rows, k], row stride ld. target: rows opmath values or nullptr. g, loss: rows opmath values.
cudaError_t launch_ff_loss_fwd(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, double scale,
                               double coef, double theta, const void* target, void* g, void* loss, cudaStream_t stream);

// s[r] = sum_k h[r, k]^2;  y[r, k] = h[r, k] * (1 / (sqrt(norm_scale * s[r]) + eps)).
// h: [rows, k], row stride ld. y: contiguous [rows, k], dtype of h. s: rows opmath values.
cudaError_t launch_normalize_fwd(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, double norm_scale,
                                 double eps, void* y, void* s, cudaStream_t stream);

// n = sqrt(norm_scale * s[r]);  inv = 1 / (n + eps);
// c = (n > 0 ? -inv * inv * norm_scale / n * <grad_y[r], h[r]> : 0) + (grad_s ? 2 * grad_s[r] : 0);
// dh[r, k] = inv * grad_y[r, k] + c * h[r, k].
// grad_y: [rows, k], row stride ld_gy. h: [rows, k], row stride ld_h. grad_s: rows opmath values
// or nullptr. s: rows opmath values. dh: contiguous [rows, k], dtype of h.
cudaError_t launch_normalize_bwd(DType dtype, const void* grad_y, int64_t ld_gy, const void* grad_s, const void* h,
                                 int64_t ld_h, const void* s, int64_t rows, int64_t k, double norm_scale, double eps,
                                 void* dh, cudaStream_t stream);

}  // namespace ffops::gpu
