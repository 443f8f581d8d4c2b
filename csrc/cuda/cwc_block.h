// Launchers of the cwc_block CUDA kernels (csrc/cuda/cwc_block.cu): the epilogue of a channel-wise
// competitive conv FF block and its backward on channels_last data. Plain C++: raw pointers, int64_t
// sizes, no torch headers. The torch-facing side (checks, allocation, the per-channel vectors
// between the passes, stream) is csrc/cuda/cwc_block_cuda.cpp; the math is csrc/ops.cpp and must
// match the CPU kernels, csrc/cpu/cwc_block.cpp.
//
// Every launcher walks tiles of kCwcRows pixels of one sample by 32 channels: `nblk` tiles per
// sample (cwc_row_blocks), n * nblk tile rows; per-channel sums are written as partials
// part[tile_row * c + k] (A: float; double for f64), added up by the caller (deterministic).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/dtype.h"

namespace ffops::gpu {

constexpr int64_t kCwcRows = 64;

inline int64_t cwc_row_blocks(int64_t pixels) { return (pixels + kCwcRows - 1) / kCwcRows; }

// p = maxpool2x2(relu(z)) (pool) or relu(z); idx = the window position of the max (pool only);
// part = per-tile channel sums of p when part != nullptr. z [n, h, w, c], p / idx [n, ho, wo, c].
cudaError_t launch_cwc_pool_relu(DType dtype, const void* z, void* p, uint8_t* idx, void* part, int64_t n, int64_t c,
                                 int64_t h, int64_t w, bool pool, cudaStream_t stream);

// part = per-tile channel sums of (p - mean)^2. p [n, pix, c]; mean [c] of A.
cudaError_t launch_cwc_centered_sq(DType dtype, const void* p, const void* mean, void* part, int64_t n, int64_t pix,
                                   int64_t c, cudaStream_t stream);

// y = a p + b (a, b [c] of A); part = per-tile channel sums of y^2.
cudaError_t launch_cwc_normalize(DType dtype, const void* p, const void* a, const void* b, void* y, void* part,
                                 int64_t n, int64_t pix, int64_t c, cudaStream_t stream);

// dy = grad_y (or 0 when nullptr) + gk[i, k] * (a p + b); part_dy / part_dyx = per-tile channel sums
// of dy and dy * (p - mean). gk [n, c] of A.
cudaError_t launch_cwc_bwd_sums(DType dtype, const void* p, const void* grad_y, const void* gk, const void* a,
                                const void* b, const void* mean, void* part_dy, void* part_dyx, int64_t n, int64_t pix,
                                int64_t c, cudaStream_t stream);

// dp = p > 0 ? a dy + c0 + c1 p : 0, written to dz [n, h, w, c] at the window position idx (pool:
// zeros at the other three; the rows / columns the pool drops must be zeroed by the caller).
cudaError_t launch_cwc_bwd_dz(DType dtype, const void* p, const void* grad_y, const void* gk, const uint8_t* idx,
                              const void* a, const void* b, const void* c0, const void* c1, void* dz, int64_t n,
                              int64_t c, int64_t h, int64_t w, bool pool, cudaStream_t stream);

}  // namespace ffops::gpu
