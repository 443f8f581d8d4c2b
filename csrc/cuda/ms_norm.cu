// CUDA kernels of the MS norms (MS-LayerNorm / MS-RMSNorm: normalization without affine whose
// backward needs only the output y and rstd). No torch headers: the launchers declared in ms_norm.h
// take raw pointers; the torch side is ms_norm_cuda.cpp, the CPU kernels csrc/cpu/ms_norm.cpp.
//
// A warp per row for rows of up to kWarpMaxK elements (8 rows per 256-thread block), else a
// 512-thread block per row; sums in float (double for double), reduced with shuffles (+ shared
// memory across warps). The row is re-read per pass (L1/L2). Correctly rounded sqrt/div.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/device_common.cuh"
#include "cuda/ms_norm.h"

namespace ffops::gpu {
namespace {

constexpr int kThreads = 256;

// ---- MS norms ---------------------------------------------------------------------------------------

constexpr int64_t kWarpMaxK = 2048;
constexpr int kRowBlock = 512;

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
      mean = group_allreduce<kBlock>(s, 32) * inv_k;
    }
    A q = A(0);
    if (active)
      for (int64_t i = m.lane; i < k; i += m.group) {
        const A d = to_acc(xr[i]) - mean;
        q += d * d;
      }
    const A rs = div_rn(A(1), sqrt_rn(group_allreduce<kBlock>(q, 32) * inv_k + eps));
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
    const A a = center ? group_allreduce<kBlock>(sg, 32) * inv_k : A(0);
    const A b = group_allreduce<kBlock>(sgy, 32) * inv_k;
    if (active) {
      const A rs = rstd[r];
      D* dr = dx + r * k;
      for (int64_t i = m.lane; i < k; i += m.group) dr[i] = from_acc<D>(rs * (to_acc(gr[i]) - a - to_acc(yr[i]) * b));
    }
  }
}

// Calls f(T{}, O{}) for a storage pair; double pairs only with double.
template <typename F>
cudaError_t with_pair(DType a, DType b, F&& f) {
  if ((a == DType::f64) != (b == DType::f64)) return cudaErrorInvalidValue;
  if (a == DType::f64) return f(double{}, double{});
  return dispatch_dtype(a, [&](auto ta) {
    if constexpr (std::is_same_v<decltype(ta), double>) {
      return cudaErrorInvalidValue;
    } else {
      switch (b) {
        case DType::f32: return f(ta, float{});
        case DType::f16: return f(ta, __half{});
        case DType::bf16: return f(ta, __nv_bfloat16{});
        default: return cudaErrorInvalidValue;
      }
    }
  });
}

}  // namespace

cudaError_t launch_ms_norm_fwd(DType x_dtype, DType y_dtype, const void* x, int64_t rows, int64_t k, int64_t ld,
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

cudaError_t launch_ms_norm_bwd(DType y_dtype, DType dx_dtype, const void* grad_y, int64_t ld_g, const void* y,
                               const void* rstd, int64_t rows, int64_t k, bool center, void* dx, cudaStream_t stream) {
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
