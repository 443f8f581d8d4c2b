// Launchers of the sparse linear layer's CUDA kernels (csrc/cuda/sparse_linear.cu): SpMM forward and
// the fused SpMM + SDDMM backward over the CSC order. Plain C++: raw pointers, int64_t sizes, no torch
// headers. The torch-facing side (allocation, stream; the argument checks are csrc/sparse_linear.h)
// is csrc/cuda/sparse_linear_cuda.cpp; the CPU kernels are csrc/cpu/sparse_linear.cpp; the math is in
// the schema comments of sparse_linear_fwd / sparse_linear_bwd in csrc/ops.cpp and the pure-torch
// spec ffops/reference/sparse.py.
//
// Common contract:
//  * W [N, M] has nnz nonzeros; activations are feature-major and contiguous: xt [M, B],
//    yt / dyt [N, B], dxt [M, B], all of the data dtype (= the dtype of values and bias).
//  * Index arrays (crow, col, t_ptr, t_row, t_perm) are contiguous, all int32 or all int64
//    (`index`), and hold a valid pattern (ffops/sparse/pattern.py validates it): pointers are
//    non-decreasing from 0 to nnz, every index is in range, t_perm is a permutation of [0, nnz).
//    The kernels do not re-check them.
//  * 16-byte accesses over the batch are used when B is a multiple of 16 / sizeof(dtype) and the
//    dense pointers are 16-byte aligned (checked at run time), else element by element.
//  * Accumulation in float (double for double data). All work is enqueued on `stream` (the current
//    device must be the data's device); empty grids are never launched. The return value is the
//    first CUDA error met (cudaSuccess if none).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace ffops::gpu {

enum class SparseIndex : int { i32 = 0, i64 = 1 };

// yt[i, b] = (bias ? bias[i] : 0) + sum_{k = crow[i]}^{crow[i+1]-1} values[k] * xt[col[k], b].
// crow: N + 1 indices, col / values: nnz entries, bias: N values or nullptr. yt: output.
cudaError_t launch_sparse_linear_fwd(DType dtype, SparseIndex index, const void* xt, int64_t B, const void* values,
                                     const void* crow, const void* col, int64_t N, const void* bias, void* yt,
                                     cudaStream_t stream);

// Number of opmath elements (float; double for double data) of the workspace that
// launch_sparse_linear_bwd needs with the same arguments (0: none; pass nullptr then). It holds
// one partial dot per nonzero and batch slice when a column's batch is split across warps.
int64_t sparse_linear_bwd_workspace(DType dtype, const void* dyt, const void* xt, const void* dxt, int64_t M, int64_t B,
                                    int64_t nnz, bool need_dvalues);

// Over the CSC order (t_ptr: M + 1 indices; t_row, t_perm: nnz indices):
//   dxt[j, b] = sum_{k = t_ptr[j]}^{t_ptr[j+1]-1} values[t_perm[k]] * dyt[t_row[k], b]   (if dxt)
//   dvalues[t_perm[k]] = sum_b dyt[t_row[k], b] * xt[j, b]                          (if dvalues)
// dxt ([M, B]) and dvalues ([nnz]) are outputs, nullptr when not needed. dyt is [N, B] (N itself
// is not needed). workspace: sparse_linear_bwd_workspace(...) opmath elements, any contents.
// dvalues is bitwise deterministic (fixed summation order, no atomics).
cudaError_t launch_sparse_linear_bwd(DType dtype, SparseIndex index, const void* dyt, const void* xt, int64_t M,
                                     int64_t B, const void* values, int64_t nnz, const void* t_ptr, const void* t_row,
                                     const void* t_perm, void* dxt, void* dvalues, void* workspace,
                                     cudaStream_t stream);

}  // namespace ffops::gpu
