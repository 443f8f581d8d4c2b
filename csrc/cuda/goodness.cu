// CUDA kernels of the goodness ops: goodness, row scaling, FF loss and length normalization
// (forward and backward). No torch headers: the launchers declared in goodness.h take raw pointers;
// the torch side is goodness_cuda.cpp, the CPU kernels csrc/cpu/goodness.cpp.
//
// Work mapping: each row is handled by a "group" of threads. For short rows the group is a
// power-of-two slice of a warp (1..32 lanes, 256-thread blocks holding 256/group rows) reduced
// with shuffles; for long rows it is the whole block (128..1024 threads, a multiple of 32)
// reduced with shuffles + shared memory. Blocks loop over rows (grid-stride) with a loop that is
// uniform across the block, so every lane reaches every shuffle / barrier. Data is read as
// 16-byte vectors when all pointers are 16-byte aligned and all row strides are multiples of 16
// bytes (checked at run time), else element by element. The two-pass ops (normalize fwd/bwd)
// re-read the row for the second pass (it is in L1/L2).
//
// Accumulation is in float (double for double data). The per-row scalar math uses correctly
// rounded sqrt/div (also if built with --use_fast_math) and the softplus is evaluated in double,
// so the results follow csrc/cpu/goodness.cpp up to summation order and FMA contraction.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "cuda/device_common.cuh"
#include "cuda/goodness.h"

namespace ffops::gpu {
namespace {

// softplus(z) = max(z, 0) + log1p(exp(-|z|)); NaN propagates through the log1p term. Evaluated
// in double (--use_fast_math would turn float expf into the approximate __expf); once per row.
__device__ __forceinline__ double softplus_d(double z) { return (z > 0.0 ? z : 0.0) + log1p(exp(-fabs(z))); }
__device__ __forceinline__ float softplus(float z) { return static_cast<float>(softplus_d(z)); }
__device__ __forceinline__ double softplus(double z) { return softplus_d(z); }

// ---- row primitives: the calling thread is `lane` of a group of `group` threads ------------

// Partial sum of a[i] * b[i] over this lane's elements of a row of k (kSquare: a[i]^2, b unused).
template <typename T, int N, bool kSquare>
__device__ __forceinline__ acc_t<T> row_dot(const T* __restrict__ a, const T* __restrict__ b, int64_t k, int lane,
                                            int group) {
  using A = acc_t<T>;
  A acc = A(0);
  const int64_t nvec = k / N;
#pragma unroll 4
  for (int64_t i = lane; i < nvec; i += group) {
    const Pack<T, N> p = reinterpret_cast<const Pack<T, N>*>(a)[i];
    const Pack<T, N> q = kSquare ? p : reinterpret_cast<const Pack<T, N>*>(b)[i];
#pragma unroll
    for (int j = 0; j < N; ++j) acc += to_acc(p.v[j]) * to_acc(q.v[j]);
  }
  for (int64_t i = nvec * N + lane; i < k; i += group) acc += to_acc(a[i]) * to_acc(kSquare ? a[i] : b[i]);
  return acc;
}

// out[i] = a * x[i] (+ b * y[i] when kTwo; y unused otherwise) for this lane's elements.
template <typename T, int N, bool kTwo>
__device__ __forceinline__ void row_axpby(acc_t<T> a, const T* __restrict__ x, acc_t<T> b, const T* __restrict__ y,
                                          T* __restrict__ out, int64_t k, int lane, int group) {
  const auto f = [a, b](T xi, T yi) -> T {
    if constexpr (kTwo) {
      return from_acc<T>(a * to_acc(xi) + b * to_acc(yi));
    } else {
      return from_acc<T>(a * to_acc(xi));
    }
  };
  const int64_t nvec = k / N;
#pragma unroll 4
  for (int64_t i = lane; i < nvec; i += group) {
    const Pack<T, N> p = reinterpret_cast<const Pack<T, N>*>(x)[i];
    const Pack<T, N> q = kTwo ? reinterpret_cast<const Pack<T, N>*>(y)[i] : p;
    Pack<T, N> o;
#pragma unroll
    for (int j = 0; j < N; ++j) o.v[j] = f(p.v[j], q.v[j]);
    reinterpret_cast<Pack<T, N>*>(out)[i] = o;
  }
  for (int64_t i = nvec * N + lane; i < k; i += group) out[i] = f(x[i], kTwo ? y[i] : x[i]);
}

// ---- kernels (`base` is uniform across the block; `active` is uniform across a group) -----

// g[r] = scale * sum h^2; when loss != nullptr also the FF loss (target may be nullptr).
template <typename T, int N, bool kBlock>
__global__ void __launch_bounds__(1024, 1)
    sumsq_rows_kernel(const T* __restrict__ h, int64_t rows, int64_t k, int64_t ld, int group, acc_t<T> scale,
                      acc_t<T> coef, acc_t<T> theta, const acc_t<T>* __restrict__ target, acc_t<T>* __restrict__ g,
                      acc_t<T>* __restrict__ loss) {
  using A = acc_t<T>;
  const RowMap m(group);
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    const bool active = r < rows;
    A acc = active ? row_dot<T, N, true>(h + r * ld, nullptr, k, m.lane, group) : A(0);
    acc = group_allreduce<kBlock>(acc, group);
    if (active && m.lane == 0) {
      const A gr = scale * acc;
      g[r] = gr;
      if (loss != nullptr) loss[r] = softplus(coef * ((target != nullptr ? target[r] : theta) - gr));
    }
  }
}

// out[r, :] = coef[r] * h[r, :]  (no reduction: the group only spreads the row over threads).
template <typename T, int N>
__global__ void __launch_bounds__(1024, 1)
    row_scale_kernel(const T* __restrict__ h, int64_t rows, int64_t k, int64_t ld, int group,
                     const acc_t<T>* __restrict__ coef, T* __restrict__ out) {
  using A = acc_t<T>;
  const RowMap m(group);
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    if (r < rows) row_axpby<T, N, false>(coef[r], h + r * ld, A(0), nullptr, out + r * k, k, m.lane, group);
  }
}

template <typename T, int N, bool kBlock>
__global__ void __launch_bounds__(1024, 1)
    normalize_fwd_kernel(const T* __restrict__ h, int64_t rows, int64_t k, int64_t ld, int group, acc_t<T> norm_scale,
                         acc_t<T> eps, T* __restrict__ y, acc_t<T>* __restrict__ s) {
  using A = acc_t<T>;
  const RowMap m(group);
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    const bool active = r < rows;
    A acc = active ? row_dot<T, N, true>(h + r * ld, nullptr, k, m.lane, group) : A(0);
    acc = group_allreduce<kBlock>(acc, group);
    if (active) {
      if (m.lane == 0) s[r] = acc;
      const A inv = div_rn(A(1), sqrt_rn(norm_scale * acc) + eps);
      row_axpby<T, N, false>(inv, h + r * ld, A(0), nullptr, y + r * k, k, m.lane, group);
    }
  }
}

template <typename T, int N, bool kBlock>
__global__ void __launch_bounds__(1024, 1)
    normalize_bwd_kernel(const T* __restrict__ gy, int64_t ld_gy, const acc_t<T>* __restrict__ gs,
                         const T* __restrict__ h, int64_t ld_h, const acc_t<T>* __restrict__ s, int64_t rows, int64_t k,
                         int group, acc_t<T> norm_scale, acc_t<T> eps, T* __restrict__ dh) {
  using A = acc_t<T>;
  const RowMap m(group);
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    const bool active = r < rows;
    A d = active ? row_dot<T, N, false>(gy + r * ld_gy, h + r * ld_h, k, m.lane, group) : A(0);
    d = group_allreduce<kBlock>(d, group);
    if (active) {
      const A n = sqrt_rn(norm_scale * s[r]);
      const A inv = div_rn(A(1), n + eps);
      // Same evaluation order as the CPU kernel: -inv * inv * ns / n * dot.
      A c = n > A(0) ? div_rn(-inv * inv * norm_scale, n) * d : A(0);
      if (gs != nullptr) c += A(2) * gs[r];
      row_axpby<T, N, true>(inv, gy + r * ld_gy, c, h + r * ld_h, dh + r * k, k, m.lane, group);
    }
  }
}

// ---- launch configuration -------------------------------------------------------------------

constexpr int kSubwarpBlock = 256;       // threads per block when a row takes <= 32 lanes
constexpr int64_t kMaxBlocks = 1 << 20;  // grid cap; the kernels loop over the remaining rows

struct Cfg {
  unsigned blocks;
  unsigned threads;
  int group;   // threads per row
  bool block;  // group == whole block (shared-memory reduction)
};

// n: elements per access (16 / sizeof(T) on the vector path, 1 otherwise).
Cfg make_cfg(int64_t rows, int64_t k, int n) {
  const int64_t slots = (k + n - 1) / n;  // accesses per row
  Cfg c{};
  if (slots <= 128) {
    // Sub-warp group: about 4 accesses per lane, power of two in [1, 32].
    const int64_t want = (slots + 3) / 4;
    int g = 1;
    while (g < 32 && g < want) g <<= 1;
    c.group = g;
    c.threads = kSubwarpBlock;
    c.block = false;
  } else {
    // Whole block: about 4 accesses per thread, multiple of 32 in [128, 1024].
    int64_t t = ((slots + 3) / 4 + 31) / 32 * 32;
    t = std::min<int64_t>(std::max<int64_t>(t, 128), 1024);
    c.group = static_cast<int>(t);
    c.threads = static_cast<unsigned>(t);
    c.block = true;
  }
  const int64_t rpb = c.threads / c.group;
  c.blocks = static_cast<unsigned>(std::min<int64_t>((rows + rpb - 1) / rpb, kMaxBlocks));
  return c;
}

// 16-byte accesses are safe when every row start is 16-byte aligned.
template <typename T>
bool vec_ok(std::initializer_list<const void*> ptrs, std::initializer_list<int64_t> lds) {
  constexpr int64_t n = 16 / sizeof(T);
  for (const void* p : ptrs)
    if (reinterpret_cast<std::uintptr_t>(p) % 16 != 0) return false;
  for (const int64_t ld : lds)
    if (ld % n != 0) return false;
  return true;
}

template <int N, bool B>
struct Variant {
  static constexpr int n = N;
  static constexpr bool block = B;
};

// Calls launch(Variant<N, block>{}, cfg) for the vector width and reduction kind that fit.
template <typename T, typename F>
cudaError_t dispatch_variant(int64_t rows, int64_t k, bool vec, F&& launch) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const Cfg c = make_cfg(rows, k, vec ? kVec : 1);
  if (vec) {
    if (c.block)
      launch(Variant<kVec, true>{}, c);
    else
      launch(Variant<kVec, false>{}, c);
  } else {
    if (c.block)
      launch(Variant<1, true>{}, c);
    else
      launch(Variant<1, false>{}, c);
  }
  return cudaGetLastError();
}

}  // namespace

// ---- launchers (see goodness.h for the contracts) --------------------------------------------------

cudaError_t launch_ff_loss_fwd(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, double scale,
                               double coef, double theta, const void* target, void* g, void* loss,
                               cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const bool vec = vec_ok<T>({h}, {ld});
    return dispatch_variant<T>(rows, k, vec, [&](auto v, const Cfg& c) {
      using V = decltype(v);
      sumsq_rows_kernel<T, V::n, V::block><<<c.blocks, c.threads, 0, stream>>>(
          static_cast<const T*>(h), rows, k, ld, c.group, static_cast<A>(scale), static_cast<A>(coef),
          static_cast<A>(theta), static_cast<const A*>(target), static_cast<A*>(g), static_cast<A*>(loss));
    });
  });
}

cudaError_t launch_goodness_fwd(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, double scale, void* g,
                                cudaStream_t stream) {
  return launch_ff_loss_fwd(dtype, h, rows, k, ld, scale, 0.0, 0.0, nullptr, g, nullptr, stream);
}

cudaError_t launch_row_scale(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, const void* coef,
                             void* out, cudaStream_t stream) {
  if (rows <= 0 || k <= 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const bool vec = vec_ok<T>({h, out}, {ld, k});
    return dispatch_variant<T>(rows, k, vec, [&](auto v, const Cfg& c) {
      using V = decltype(v);
      row_scale_kernel<T, V::n><<<c.blocks, c.threads, 0, stream>>>(static_cast<const T*>(h), rows, k, ld, c.group,
                                                                    static_cast<const A*>(coef), static_cast<T*>(out));
    });
  });
}

cudaError_t launch_normalize_fwd(DType dtype, const void* h, int64_t rows, int64_t k, int64_t ld, double norm_scale,
                                 double eps, void* y, void* s, cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const bool vec = vec_ok<T>({h, y}, {ld, k});
    return dispatch_variant<T>(rows, k, vec, [&](auto v, const Cfg& c) {
      using V = decltype(v);
      normalize_fwd_kernel<T, V::n, V::block><<<c.blocks, c.threads, 0, stream>>>(
          static_cast<const T*>(h), rows, k, ld, c.group, static_cast<A>(norm_scale), static_cast<A>(eps),
          static_cast<T*>(y), static_cast<A*>(s));
    });
  });
}

cudaError_t launch_normalize_bwd(DType dtype, const void* grad_y, int64_t ld_gy, const void* grad_s, const void* h,
                                 int64_t ld_h, const void* s, int64_t rows, int64_t k, double norm_scale, double eps,
                                 void* dh, cudaStream_t stream) {
  if (rows <= 0 || k <= 0) return cudaSuccess;  // dh is empty
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const bool vec = vec_ok<T>({grad_y, h, dh}, {ld_gy, ld_h, k});
    return dispatch_variant<T>(rows, k, vec, [&](auto v, const Cfg& c) {
      using V = decltype(v);
      normalize_bwd_kernel<T, V::n, V::block><<<c.blocks, c.threads, 0, stream>>>(
          static_cast<const T*>(grad_y), ld_gy, static_cast<const A*>(grad_s), static_cast<const T*>(h), ld_h,
          static_cast<const A*>(s), rows, k, c.group, static_cast<A>(norm_scale), static_cast<A>(eps),
          static_cast<T*>(dh));
    });
  });
}

}  // namespace ffops::gpu
