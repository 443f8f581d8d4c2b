// Device helpers shared by the CUDA kernels of every op group (csrc/cuda/goodness.cu, ff_linear.cu,
// packed_act.cu, ms_norm.cu, sparse_linear.cu), and the dispatch from a storage DType (cuda/dtype.h)
// to a kernel's template instantiation. No torch headers.
// Internal linkage (an anonymous namespace): each .cu file gets its own copy.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/dtype.h"

namespace ffops::gpu {
namespace {

// ---- storage types ---------------------------------------------------------------------------

// Calls f(T{}) with T the storage type of `dtype` (float, double, __half, __nv_bfloat16) and returns
// its result; cudaErrorInvalidValue for an unknown dtype.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::f32: return f(float{});
    case DType::f64: return f(double{});
    case DType::f16: return f(__half{});
    case DType::bf16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// ---- row mapping ---------------------------------------------------------------------------

// Groups of `group` threads each handle one row: block b's groups take rows b * rpb + [0, rpb)
// (rpb = blockDim.x / group), then stride by gridDim.x * rpb (first / step: uniform across the block).
struct RowMap {
  int group, sub, lane;
  int64_t first, step;
  __device__ __forceinline__ explicit RowMap(int group_) : group(group_) {
    const int rpb = static_cast<int>(blockDim.x) / group;
    sub = static_cast<int>(threadIdx.x) / group;
    lane = static_cast<int>(threadIdx.x) - sub * group;
    first = static_cast<int64_t>(blockIdx.x) * rpb;
    step = static_cast<int64_t>(gridDim.x) * rpb;
  }
};

// ---- launch configuration ------------------------------------------------------------------

// Blocks of a 1-D grid for `items` work items, `per_block` per block: at least 1, at most 65535
// (grid-stride kernels loop over the rest). Used by the packed activations and the MS norms.
inline int blocks_for(int64_t items, int per_block) {
  constexpr int64_t kMaxBlocks1D = 65535;
  return static_cast<int>(std::min<int64_t>(kMaxBlocks1D, std::max<int64_t>(1, (items + per_block - 1) / per_block)));
}

// ---- element types -------------------------------------------------------------------------

// Accumulation ("opmath") type: float for float / half / bfloat16, double for double.
template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// Round-to-nearest-even conversion back to the storage type (as c10::Half / c10::BFloat16 do).
template <typename T, typename A>
__device__ __forceinline__ T from_acc(A x) {
  if constexpr (std::is_same_v<T, __half>) {
    return __float2half_rn(x);
  } else if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return __float2bfloat16_rn(x);
  } else {
    return static_cast<T>(x);
  }
}

// Correctly rounded scalar math, also if built with --use_fast_math; products that must not be
// contracted into an FMA (the CPU kernels round them separately).
__device__ __forceinline__ float sqrt_rn(float x) { return __fsqrt_rn(x); }
__device__ __forceinline__ double sqrt_rn(double x) { return __dsqrt_rn(x); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// N consecutive elements, loaded / stored as one access (16 bytes when N = 16 / sizeof(T)).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// ---- reductions -----------------------------------------------------------------------------

// Sum over aligned groups of `width` lanes (a power of two <= 32); every lane gets the sum.
// All 32 lanes of the warp must call it.
template <typename A>
__device__ __forceinline__ A warp_allreduce(A v, int width) {
  for (int o = width >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the sum.
// Two barriers; the result lives in its own slot, so back-to-back calls do not race (see below).
template <typename A>
__device__ __forceinline__ A block_allreduce(A v) {
  __shared__ A part[33];
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int nwarps = (blockDim.x + 31) >> 5;
  v = warp_allreduce(v, 32);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nwarps ? part[lane] : A(0);
    v = warp_allreduce(v, 32);
    if (lane == 0) part[32] = v;
  }
  __syncthreads();
  // The next call writes part[32] only after its first barrier, which every thread reaches
  // after this read; part[w] is rewritten only by warps past the second barrier, i.e. after
  // warp 0 has read it.
  return part[32];
}

template <bool kBlock, typename A>
__device__ __forceinline__ A group_allreduce(A v, int group) {
  if constexpr (kBlock) {
    return block_allreduce(v);
  } else {
    return warp_allreduce(v, group);
  }
}

}  // namespace
}  // namespace ffops::gpu
