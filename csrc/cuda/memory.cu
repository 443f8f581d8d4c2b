// Memory-saving CUDA kernels: packed-code activations (ReGELU2, ReSiLU2, Few-Bit) and MS norms.
// No torch headers: the launchers declared in memory.h take raw pointers.
//
// Packed activations: one thread per element, grid-stride over block-sized tiles with a loop that
// is uniform across the block (every lane reaches every shuffle). Tiles start at multiples of 32,
// so the 8 elements of one packed group are 8 aligned lanes of a warp: each lane shifts its code
// into place, three xor-shuffles combine the group's word, and the group's first lane stores its
// `bits` bytes. Loads and stores of the data are coalesced; borders / levels sit in shared memory.
// The backward reads the byte(s) holding each element's code (cached: a warp's codes share a few
// bytes). The math uses the CUDA math library (correctly rounded sqrt/div in the norms).
//
// MS norms: a warp per row for rows of up to kWarpMaxK elements (8 rows per 256-thread block),
// else a 512-thread block per row; sums in float (double for double), reduced with shuffles (+
// shared memory across warps). The row is re-read per pass (L1/L2).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/device_common.cuh"
#include "cuda/memory.h"

namespace ffops::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

int blocks_for(int64_t items, int per_block) {
  return static_cast<int>(std::min<int64_t>(kMaxBlocks, std::max<int64_t>(1, (items + per_block - 1) / per_block)));
}

// ---- activations ----------------------------------------------------------------------------------

template <int FN, typename A>
__device__ __forceinline__ A activation(A x) {
  if constexpr (FN == 0) {  // gelu
    return A(0.5) * x * erfc(-x * A(0.70710678118654752440));
  } else if constexpr (FN == 1) {  // gelu_tanh
    return A(0.5) * x * (A(1) + tanh(A(0.79788456080286535588) * (x + A(0.044715) * x * x * x)));
  } else if constexpr (FN == 2) {  // silu
    return x / (A(1) + exp(-x));
  } else if constexpr (FN == 3) {
    return tanh(x);
  } else if constexpr (FN == 4) {  // sigmoid
    return A(1) / (A(1) + exp(-x));
  } else if constexpr (FN == 5) {  // softplus (NaN: the log1p term)
    return (x > A(0) ? x : A(0)) + log1p(exp(-fabs(x)));
  } else if constexpr (FN == 6) {  // elu
    return x > A(0) ? x : expm1(x);
  } else {  // mish
    return x * tanh((x > A(0) ? x : A(0)) + log1p(exp(-fabs(x))));
  }
}

struct ActTable {
  double v[16];
};

template <typename T, int FN>
__global__ void __launch_bounds__(kThreads) packed_act_fwd_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                  uint8_t* __restrict__ codes, int64_t n, int bits,
                                                                  int64_t nbytes, ActTable borders) {
  using A = acc_t<T>;
  __shared__ A b[16];
  const int nb = (1 << bits) - 1;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < 16; ++j) b[j] = static_cast<A>(borders.v[j]);
  }
  __syncthreads();
  const int lane = threadIdx.x & 31;
  const int sub = lane & 7;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * blockDim.x; base < n;
       base += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = base + threadIdx.x;
    uint32_t word = 0;
    if (i < n) {
      const A xi = to_acc(x[i]);
      y[i] = from_acc<T>(activation<FN>(xi));
      uint32_t code = 0;
      for (int j = 0; j < nb; ++j) code += xi > b[j] ? 1u : 0u;
      word = code << (bits * sub);
    }
    // disjoint bit fields: the sum over the 8 lanes of a group is their or
    word += __shfl_xor_sync(0xffffffffu, word, 1);
    word += __shfl_xor_sync(0xffffffffu, word, 2);
    word += __shfl_xor_sync(0xffffffffu, word, 4);
    if (sub == 0 && i < n) {
      const int64_t first = (i >> 3) * bits;
      for (int k = 0; k < bits && first + k < nbytes; ++k) codes[first + k] = static_cast<uint8_t>(word >> (8 * k));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) packed_act_bwd_kernel(const T* __restrict__ g,
                                                                  const uint8_t* __restrict__ codes,
                                                                  T* __restrict__ dx, int64_t n, int bits,
                                                                  int64_t nbytes, ActTable levels) {
  using A = acc_t<T>;
  __shared__ A lv[16];
  if (threadIdx.x == 0) {
#pragma unroll
    for (int j = 0; j < 16; ++j) lv[j] = static_cast<A>(levels.v[j]);
  }
  __syncthreads();
  const uint32_t mask = (1u << bits) - 1u;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t bit = i * bits;
    const int64_t byte = bit >> 3;
    uint32_t v = codes[byte];
    if (bits == 3 && byte + 1 < nbytes) v |= static_cast<uint32_t>(codes[byte + 1]) << 8;
    const uint32_t code = (v >> (bit & 7)) & mask;
    dx[i] = from_acc<T>(to_acc(g[i]) * lv[code]);
  }
}

template <typename T>
cudaError_t act_fwd_typed(const void* x, int64_t n, int fn, const ActTable& tab, int bits, void* y, uint8_t* codes,
                          cudaStream_t stream) {
  const int blocks = blocks_for(n, kThreads);
  const int64_t nbytes = (n * bits + 7) / 8;
  const T* xp = static_cast<const T*>(x);
  T* yp = static_cast<T*>(y);
  switch (fn) {
#define FFOPS_ACT_CASE(F)                                                                               \
  case F:                                                                                               \
    packed_act_fwd_kernel<T, F><<<blocks, kThreads, 0, stream>>>(xp, yp, codes, n, bits, nbytes, tab); \
    break;
    FFOPS_ACT_CASE(0)
    FFOPS_ACT_CASE(1)
    FFOPS_ACT_CASE(2)
    FFOPS_ACT_CASE(3)
    FFOPS_ACT_CASE(4)
    FFOPS_ACT_CASE(5)
    FFOPS_ACT_CASE(6)
    FFOPS_ACT_CASE(7)
#undef FFOPS_ACT_CASE
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

// ---- MS norms ---------------------------------------------------------------------------------------

constexpr int64_t kWarpMaxK = 2048;
constexpr int kRowBlock = 512;

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block; every thread gets it. Safe back to back (the result has its own slot, written
// after the first barrier of the next call, which every thread reaches after reading it).
template <typename A>
__device__ __forceinline__ A block_sum(A v) {
  __shared__ A part[33];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  if (lane == 0) part[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = warp_sum(lane < nwarps ? part[lane] : A(0));
    if (lane == 0) part[32] = v;
  }
  __syncthreads();
  return part[32];
}

template <bool kBlock, typename A>
__device__ __forceinline__ A group_sum(A v) {
  if constexpr (kBlock) {
    return block_sum(v);
  } else {
    return warp_sum(v);
  }
}

template <typename T, typename O, bool kBlock>
__global__ void ms_norm_fwd_kernel(const T* __restrict__ x, int64_t rows, int64_t k, int64_t ld, acc_t<T> eps,
                                   bool center, O* __restrict__ y, acc_t<T>* __restrict__ rstd) {
  using A = acc_t<T>;
  const RowMap m(kBlock ? static_cast<int>(blockDim.x) : 32);  // kBlock: one row per block, else per warp
  const A inv_k = div_rn(A(1), static_cast<A>(k > 0 ? k : 1));
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    const bool active = r < rows;
    const T* xr = x + (active ? r : 0) * ld;
    A mean = A(0);
    if (center) {
      A s = A(0);
      if (active)
        for (int64_t i = m.lane; i < k; i += m.group) s += to_acc(xr[i]);
      mean = group_sum<kBlock>(s) * inv_k;
    }
    A q = A(0);
    if (active)
      for (int64_t i = m.lane; i < k; i += m.group) {
        const A d = to_acc(xr[i]) - mean;
        q += d * d;
      }
    const A rs = div_rn(A(1), sqrt_rn(group_sum<kBlock>(q) * inv_k + eps));
    if (active) {
      O* yr = y + r * k;
      for (int64_t i = m.lane; i < k; i += m.group) yr[i] = from_acc<O>((to_acc(xr[i]) - mean) * rs);
      if (m.lane == 0) rstd[r] = rs;
    }
  }
}

template <typename O, typename D, bool kBlock>
__global__ void ms_norm_bwd_kernel(const O* __restrict__ g, int64_t ld_g, const O* __restrict__ y,
                                   const acc_t<O>* __restrict__ rstd, int64_t rows, int64_t k, bool center,
                                   D* __restrict__ dx) {
  using A = acc_t<O>;
  const RowMap m(kBlock ? static_cast<int>(blockDim.x) : 32);  // kBlock: one row per block, else per warp
  const A inv_k = div_rn(A(1), static_cast<A>(k > 0 ? k : 1));
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    const bool active = r < rows;
    const O* gr = g + (active ? r : 0) * ld_g;
    const O* yr = y + (active ? r : 0) * k;
    A sg = A(0), sgy = A(0);
    if (active)
      for (int64_t i = m.lane; i < k; i += m.group) {
        const A gi = to_acc(gr[i]);
        sg += gi;
        sgy += gi * to_acc(yr[i]);
      }
    const A a = center ? group_sum<kBlock>(sg) * inv_k : A(0);
    const A b = group_sum<kBlock>(sgy) * inv_k;
    if (active) {
      const A rs = rstd[r];
      D* dr = dx + r * k;
      for (int64_t i = m.lane; i < k; i += m.group) dr[i] = from_acc<D>(rs * (to_acc(gr[i]) - a - to_acc(yr[i]) * b));
    }
  }
}

// Calls f(T{}) for the CUDA storage type of `d`.
template <typename F>
cudaError_t with_type(FFDtype d, F&& f) {
  switch (d) {
    case FFDtype::f32: return f(float{});
    case FFDtype::f64: return f(double{});
    case FFDtype::f16: return f(__half{});
    case FFDtype::bf16: return f(__nv_bfloat16{});
  }
  return cudaErrorInvalidValue;
}

// Calls f(T{}, O{}) for a storage pair; double pairs only with double.
template <typename F>
cudaError_t with_pair(FFDtype a, FFDtype b, F&& f) {
  if ((a == FFDtype::f64) != (b == FFDtype::f64)) return cudaErrorInvalidValue;
  if (a == FFDtype::f64) return f(double{}, double{});
  return with_type(a, [&](auto ta) {
    if constexpr (std::is_same_v<decltype(ta), double>) {
      return cudaErrorInvalidValue;
    } else {
      switch (b) {
        case FFDtype::f32: return f(ta, float{});
        case FFDtype::f16: return f(ta, __half{});
        case FFDtype::bf16: return f(ta, __nv_bfloat16{});
        default: return cudaErrorInvalidValue;
      }
    }
  });
}

}  // namespace

cudaError_t launch_packed_act_fwd(FFDtype dtype, const void* x, int64_t n, int fn, const double* borders, int bits,
                                  void* y, uint8_t* codes, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (bits < 1 || bits > 4) return cudaErrorInvalidValue;
  ActTable tab{};
  for (int j = 0; j < (1 << bits) - 1; ++j) tab.v[j] = borders[j];
  return with_type(dtype, [&](auto t) { return act_fwd_typed<decltype(t)>(x, n, fn, tab, bits, y, codes, stream); });
}

cudaError_t launch_packed_act_bwd(FFDtype dtype, const void* grad_y, const uint8_t* codes, int64_t n,
                                  const double* levels, int bits, void* dx, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (bits < 1 || bits > 4) return cudaErrorInvalidValue;
  ActTable tab{};
  for (int j = 0; j < (1 << bits); ++j) tab.v[j] = levels[j];
  const int64_t nbytes = (n * bits + 7) / 8;
  return with_type(dtype, [&](auto t) {
    using T = decltype(t);
    packed_act_bwd_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(grad_y), codes, static_cast<T*>(dx), n, bits, nbytes, tab);
    return cudaGetLastError();
  });
}

cudaError_t launch_ms_norm_fwd(FFDtype x_dtype, FFDtype y_dtype, const void* x, int64_t rows, int64_t k, int64_t ld,
                               double eps, bool center, void* y, void* rstd, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  return with_pair(x_dtype, y_dtype, [&](auto t, auto o) {
    using T = decltype(t);
    using O = decltype(o);
    using A = acc_t<T>;
    const T* xp = static_cast<const T*>(x);
    if (k <= kWarpMaxK) {
      ms_norm_fwd_kernel<T, O, false><<<blocks_for(rows, kThreads / 32), kThreads, 0, stream>>>(
          xp, rows, k, ld, static_cast<A>(eps), center, static_cast<O*>(y), static_cast<A*>(rstd));
    } else {
      ms_norm_fwd_kernel<T, O, true><<<blocks_for(rows, 1), kRowBlock, 0, stream>>>(
          xp, rows, k, ld, static_cast<A>(eps), center, static_cast<O*>(y), static_cast<A*>(rstd));
    }
    return cudaGetLastError();
  });
}

cudaError_t launch_ms_norm_bwd(FFDtype y_dtype, FFDtype dx_dtype, const void* grad_y, int64_t ld_g, const void* y,
                               const void* rstd, int64_t rows, int64_t k, bool center, void* dx,
                               cudaStream_t stream) {
  if (rows == 0 || k == 0) return cudaSuccess;
  return with_pair(y_dtype, dx_dtype, [&](auto o, auto d) {
    using O = decltype(o);
    using D = decltype(d);
    using A = acc_t<O>;
    const O* gp = static_cast<const O*>(grad_y);
    const O* yp = static_cast<const O*>(y);
    if (k <= kWarpMaxK) {
      ms_norm_bwd_kernel<O, D, false><<<blocks_for(rows, kThreads / 32), kThreads, 0, stream>>>(
          gp, ld_g, yp, static_cast<const A*>(rstd), rows, k, center, static_cast<D*>(dx));
    } else {
      ms_norm_bwd_kernel<O, D, true><<<blocks_for(rows, 1), kRowBlock, 0, stream>>>(
          gp, ld_g, yp, static_cast<const A*>(rstd), rows, k, center, static_cast<D*>(dx));
    }
    return cudaGetLastError();
  });
}

}  // namespace ffops::gpu
