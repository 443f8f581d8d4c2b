// CUDA kernel of the randomized linear op: one block of the random sketch matrix, S^T for rows
// r0 .. r0 + r, one thread per entry (the hash: csrc/randomized_linear.h). The products with the
// data run in cuBLAS (csrc/cuda/randomized_linear_cuda.cpp).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../randomized_linear.h"  // csrc/randomized_linear.h: the hash and the checks shared with the CPU kernel
#include "cuda/randomized_linear.h"

namespace ffops::gpu {
namespace {

constexpr int kThreads = 256;

template <int KIND, typename A>
__global__ void __launch_bounds__(kThreads)
    rmm_fill_kernel(A* __restrict__ tile, int64_t ld, int64_t k, int64_t r0, int64_t r, uint64_t seed, A scale) {
  const int64_t total = k * r;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t c = t / r, i = t - c * r;
    const uint32_t h = rmm::mix32(rmm::row_hash(r0 + i, seed) ^ rmm::col_term(c, seed));
    tile[c * ld + i] = rmm::entry<KIND, A>(h) * scale;
  }
}

template <typename A>
cudaError_t fill(void* tile, int64_t ld, int64_t k, int64_t r0, int64_t r, uint64_t seed, int kind,
                 cudaStream_t stream) {
  const int64_t total = k * r;
  const int blocks = static_cast<int>(std::min<int64_t>((total + kThreads - 1) / kThreads, 65535));
  const A scale = A(1) / std::sqrt(static_cast<A>(k));
  A* tp = static_cast<A*>(tile);
  if (kind == rmm::kRademacher) {
    rmm_fill_kernel<rmm::kRademacher, A><<<blocks, kThreads, 0, stream>>>(tp, ld, k, r0, r, seed, scale);
  } else {
    rmm_fill_kernel<rmm::kGaussian, A><<<blocks, kThreads, 0, stream>>>(tp, ld, k, r0, r, seed, scale);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_rmm_fill(bool is_double, void* tile, int64_t ld, int64_t k, int64_t r0, int64_t r, uint64_t seed,
                            int kind, cudaStream_t stream) {
  if (k * r == 0) return cudaSuccess;
  return is_double ? fill<double>(tile, ld, k, r0, r, seed, kind, stream)
                   : fill<float>(tile, ld, k, r0, r, seed, kind, stream);
}

}  // namespace ffops::gpu
