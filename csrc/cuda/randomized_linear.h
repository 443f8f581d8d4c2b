// Launcher of the randomized linear op's CUDA kernel (csrc/cuda/randomized_linear.cu): one block of
// the random sketch matrix. Plain C++: raw pointers, no torch headers. The torch-facing side (checks,
// the block loop and the cuBLAS products) is csrc/cuda/randomized_linear_cuda.cpp; the hash is
// csrc/randomized_linear.h, shared with the CPU kernel.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace ffops::gpu {

// tile[c * ld + i] = S[r0 + i, c] for c < k, i < r: the block S[r0 : r0 + r, :]^T of the sketch matrix
// (entries scaled by 1 / sqrt(k)), in float (is_double false) or double. kind: 0 gaussian, 1 rademacher.
cudaError_t launch_rmm_fill(bool is_double, void* tile, int64_t ld, int64_t k, int64_t r0, int64_t r, uint64_t seed,
                            int kind, cudaStream_t stream);

}  // namespace ffops::gpu
