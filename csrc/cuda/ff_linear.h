// Launchers of the fused Forward-Forward linear layer's CUDA epilogues and of its all-label
// prediction rows (csrc/cuda/ff_linear.cu). Plain C++: raw pointers, int64_t sizes, no torch
// headers. The GEMMs themselves run in cuBLAS (at::mm) on the torch-facing side,
// csrc/cuda/ff_linear_cuda.cpp, or in the caller (ff_label_rows); the math is in the schema
// comments of ff_linear_fwd / ff_linear_bwd / ff_label_rows in csrc/ops.cpp; the CPU kernels are
// csrc/cpu/ff_linear.cpp, ff_linear_overlay.cpp, ff_label_rows.cpp.
//
// Common contract:
//  * Dense [rows, out] matrices (h, u) are contiguous (row stride out) and of the data dtype;
//    16-byte accesses are used only when out is a multiple of 16 / sizeof(dtype) and the dense
//    pointers (and bias) are 16-byte aligned (checked at run time), else element by element.
//  * Vectors of "opmath" type (x_scale, sumsq, pos_mean, grad_sumsq, grad_pos_mean,
//    grad_bias_acc) are contiguous: float for f32/f16/bf16 data, double for f64 data.
//  * 0 <= n_pos <= rows (else cudaErrorInvalidValue). Rows r < n_pos are the positive rows.
//  * Output vectors need no initialization: the launchers zero what they accumulate into
//    (cudaMemsetAsync on `stream`).
//  * Determinism: with workspace == nullptr, column sums (pos_mean, grad_bias_acc) are added with
//    float atomics, so they are not bitwise deterministic; nor is sumsq for very wide rows (out >
//    16384 for vectorized f32/f16/bf16, out > 8192 otherwise), where a row is split over several
//    blocks. With a workspace of the size that ff_linear_*_epilogue_workspace gives (any contents),
//    each block stores its partial sums there and they are added in a fixed order: bitwise
//    deterministic run to run on one device (torch.use_deterministic_algorithms).
//  * All work is enqueued on `stream` (the current device must be the data's device); empty
//    grids are never launched. The return value is the first CUDA error met (cudaSuccess if none).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace ffops::gpu {

// Forward epilogue, in place over h = acc = x @ weight^T ([rows, out], data dtype):
//   pre = (x_scale ? x_scale[r] : 1) * acc[r, j] + (bias ? bias[j] : 0)
//   h[r, j] = relu(pre)                       (NaN propagates; stored rounded to the data dtype)
//   sumsq[r] = sum_j relu(pre)^2              (opmath accumulation of the unrounded value)
//   pos_mean[j] = (sum_{r < n_pos} relu(pre)[r, j]) / n_pos  (unrounded, as csrc/cpu/ff_linear.cpp;
//                                                             0 / 0 = NaN when n_pos == 0)
// x_scale: rows opmath values or nullptr. bias: out values of the data dtype or nullptr.
// sumsq: rows opmath values. pos_mean: out opmath values. workspace: nullptr (atomics) or
// ff_linear_fwd_epilogue_workspace(...) opmath values (deterministic).
cudaError_t launch_ff_linear_fwd_epilogue(DType dtype, void* h, int64_t rows, int64_t out, const void* x_scale,
                                          const void* bias, int64_t n_pos, void* sumsq, void* pos_mean, void* workspace,
                                          cudaStream_t stream);

// *elems = the opmath values of the workspace of a deterministic launch_ff_linear_fwd_epilogue with
// the same h, rows, out and bias on the current device (0 when there is nothing to sum).
cudaError_t ff_linear_fwd_epilogue_workspace(DType dtype, const void* h, int64_t rows, int64_t out, const void* bias,
                                             int64_t* elems);

// Backward epilogue:
//   dpre[r, j] = 2 grad_sumsq[r] h[r, j]
//              + (grad_pos_mean && r < n_pos && h[r, j] > 0 ? grad_pos_mean[j] / n_pos : 0)
//   u[r, j] = (x_scale ? x_scale[r] : 1) * dpre[r, j]   (stored rounded to the data dtype)
//   grad_bias_acc[j] = sum_r dpre[r, j]                 (opmath)
// h: [rows, out] data dtype. x_scale: rows opmath values or nullptr. grad_sumsq: rows opmath
// values. grad_pos_mean: out opmath values or nullptr. u: [rows, out] data dtype (output).
// grad_bias_acc: out opmath values (output; the caller converts it to the data dtype).
// pos_coef: workspace of out opmath values (receives grad_pos_mean / n_pos); used only when
// grad_pos_mean != nullptr, may be nullptr otherwise. workspace: nullptr (atomics) or
// ff_linear_bwd_epilogue_workspace(...) opmath values (deterministic).
cudaError_t launch_ff_linear_bwd_epilogue(DType dtype, const void* h, int64_t rows, int64_t out, const void* x_scale,
                                          const void* grad_sumsq, const void* grad_pos_mean, int64_t n_pos, void* u,
                                          void* grad_bias_acc, void* pos_coef, void* workspace, cudaStream_t stream);

// As ff_linear_fwd_epilogue_workspace, for launch_ff_linear_bwd_epilogue with the same h, rows, out and u.
cudaError_t ff_linear_bwd_epilogue_workspace(DType dtype, const void* h, int64_t rows, int64_t out, const void* u,
                                             int64_t* elems);

// All-label rows of the first layer (ff_label_rows), row r = b * labels + c of h [rows * labels, out]:
//   h[r, j] = relu((scale ? scale[b] : 1) * (pre[b, j] + on[b] * wt[c, j]) + (bias ? bias[j] : 0))
//   sumsq[r] = sum_j h[r, j]^2                (opmath, of the unrounded value; 0 when out == 0)
// pre: [rows, out] data dtype. on: rows opmath values. scale: rows opmath values or nullptr.
// wt: [labels, out] data dtype, contiguous (the transposed label weights W[:, :labels]^T).
// bias: out values of the data dtype or nullptr. h: [rows * labels, out] data dtype (output).
// sumsq: rows * labels opmath values (output). labels >= 1. Deterministic (no atomics).
cudaError_t launch_ff_label_rows(DType dtype, const void* pre, int64_t rows, int64_t out, const void* on,
                                 const void* scale, const void* wt, int64_t labels, const void* bias, void* h,
                                 void* sumsq, cudaStream_t stream);

}  // namespace ffops::gpu
