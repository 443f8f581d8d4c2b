// CUDA kernels of the packed-code activations (ReGELU2, ReSiLU2, Few-Bit): exact forward plus k-bit
// codes, backward from the codes. No torch headers: the launchers declared in packed_act.h take raw
// pointers; the torch side is packed_act_cuda.cpp, the CPU kernels csrc/cpu/packed_act.cpp.
//
// One thread per element, grid-stride over block-sized tiles with a loop that is uniform across the
// block (every lane reaches every shuffle). Tiles start at multiples of 32, so the 8 elements of one
// packed group are 8 aligned lanes of a warp: each lane shifts its code into place, three
// xor-shuffles combine the group's word, and the group's first lane stores its `bits` bytes. Loads
// and stores of the data are coalesced; borders / levels sit in shared memory. The backward reads the
// byte(s) holding each element's code (cached: a warp's codes share a few bytes). The math uses the
// CUDA math library.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/device_common.cuh"
#include "cuda/packed_act.h"

namespace ffops::gpu {
namespace {

constexpr int kThreads = 256;

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
  } else if constexpr (FN == 7) {  // mish
    return x * tanh((x > A(0) ? x : A(0)) + log1p(exp(-fabs(x))));
  } else if constexpr (FN == 8) {  // hardswish: t / 6 first, so x t never overflows; NaN passes the selects
    A t = x + A(3);
    t = t < A(0) ? A(0) : t;
    t = t > A(6) ? A(6) : t;
    return x * (t / A(6));
  } else if constexpr (FN == 9) {  // leaky_relu, slope 0.01
    return x > A(0) ? x : x * A(0.01);
  } else if constexpr (FN == 10) {  // selu
    return x > A(0) ? A(1.0507009873554804934) * x : A(1.0507009873554804934 * 1.6732632423543772848) * expm1(x);
  } else if constexpr (FN == 11) {  // celu, alpha 1 (= elu)
    return x > A(0) ? x : expm1(x);
  } else if constexpr (FN == 12) {  // logsigmoid (+0 where e^-|x| underflows, as torch)
    return (x < A(0) ? x : A(0)) - log1p(exp(-fabs(x)));
  } else if constexpr (FN == 13) {  // softsign
    return x / (A(1) + fabs(x));
  } else {  // relu6: keeps -0 and NaN
    static_assert(FN == 14, "activation ids: csrc/packed_act.h");
    const A t = x < A(0) ? A(0) : x;
    return t > A(6) ? A(6) : t;
  }
}

struct ActTable {
  double v[16];
};

template <typename T, int FN>
__global__ void __launch_bounds__(kThreads)
    packed_act_fwd_kernel(const T* __restrict__ x, T* __restrict__ y, uint8_t* __restrict__ codes, int64_t n, int bits,
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
__global__ void __launch_bounds__(kThreads)
    packed_act_bwd_kernel(const T* __restrict__ g, const uint8_t* __restrict__ codes, T* __restrict__ dx, int64_t n,
                          int bits, int64_t nbytes, ActTable levels) {
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
#define FFOPS_ACT_CASE(F) \
  case F: packed_act_fwd_kernel<T, F><<<blocks, kThreads, 0, stream>>>(xp, yp, codes, n, bits, nbytes, tab); break;
    FFOPS_ACT_CASE(0)
    FFOPS_ACT_CASE(1)
    FFOPS_ACT_CASE(2)
    FFOPS_ACT_CASE(3)
    FFOPS_ACT_CASE(4)
    FFOPS_ACT_CASE(5)
    FFOPS_ACT_CASE(6)
    FFOPS_ACT_CASE(7)
    FFOPS_ACT_CASE(8)
    FFOPS_ACT_CASE(9)
    FFOPS_ACT_CASE(10)
    FFOPS_ACT_CASE(11)
    FFOPS_ACT_CASE(12)
    FFOPS_ACT_CASE(13)
    FFOPS_ACT_CASE(14)
#undef FFOPS_ACT_CASE
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_packed_act_fwd(DType dtype, const void* x, int64_t n, int fn, const double* borders, int bits,
                                  void* y, uint8_t* codes, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (bits < 1 || bits > 4) return cudaErrorInvalidValue;
  ActTable tab{};
  for (int j = 0; j < (1 << bits) - 1; ++j) tab.v[j] = borders[j];
  return dispatch_dtype(dtype,
                        [&](auto t) { return act_fwd_typed<decltype(t)>(x, n, fn, tab, bits, y, codes, stream); });
}

cudaError_t launch_packed_act_bwd(DType dtype, const void* grad_y, const uint8_t* codes, int64_t n,
                                  const double* levels, int bits, void* dx, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (bits < 1 || bits > 4) return cudaErrorInvalidValue;
  ActTable tab{};
  for (int j = 0; j < (1 << bits); ++j) tab.v[j] = levels[j];
  const int64_t nbytes = (n * bits + 7) / 8;
  return dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    packed_act_bwd_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(grad_y), codes, static_cast<T*>(dx), n, bits, nbytes, tab);
    return cudaGetLastError();
  });
}

}  // namespace ffops::gpu
