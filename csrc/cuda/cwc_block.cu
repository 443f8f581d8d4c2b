// The cwc_block CUDA kernels (launchers and contract: csrc/cuda/cwc_block.h). A block of 32 x 8
// threads owns a tile of kCwcRows pixels of one sample by 32 consecutive channels: threadIdx.x walks
// the channels (coalesced along channels_last memory), threadIdx.y the pixels; per-channel sums are
// reduced over threadIdx.y in shared memory and written as one partial per tile.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/cwc_block.h"
#include "cuda/device_common.cuh"

namespace ffops::gpu {
namespace {

constexpr int kLanes = 32, kRowsPerPass = 8;

struct Tile {
  int64_t i, s0, k;
  bool live;
  __device__ __forceinline__ Tile(int64_t nblk, int64_t c) {
    i = blockIdx.x / nblk;
    s0 = (blockIdx.x % nblk) * kCwcRows;
    k = static_cast<int64_t>(blockIdx.y) * kLanes + threadIdx.x;
    live = k < c;
  }
  __device__ __forceinline__ int64_t end(int64_t pix) const { return s0 + kCwcRows < pix ? s0 + kCwcRows : pix; }
};

// Sums v over threadIdx.y; thread y == 0 writes part[blockIdx.x * c + k].
template <typename A>
__device__ __forceinline__ void write_partial(A v, A* part, int64_t c, const Tile& t) {
  __shared__ A buf[kRowsPerPass][kLanes];
  buf[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.y == 0 && t.live) {
    A s = 0;
    for (int j = 0; j < kRowsPerPass; ++j) s += buf[j][threadIdx.x];
    part[static_cast<int64_t>(blockIdx.x) * c + t.k] = s;
  }
}

template <typename T>
__global__ void pool_relu_kernel(const T* z, T* p, uint8_t* idx, acc_t<T>* part, int64_t c, int64_t h, int64_t w,
                                 int64_t wo, int64_t pix, int64_t nblk, bool pool) {
  using A = acc_t<T>;
  const Tile t(nblk, c);
  A sum = 0;
  for (int64_t s = t.s0 + threadIdx.y; s < t.end(pix) && t.live; s += kRowsPerPass) {
    const int64_t out = (t.i * pix + s) * c + t.k;
    A best;
    if (pool) {
      const int64_t oy = s / wo, ox = s % wo;
      const T* r = z + ((t.i * h + 2 * oy) * w + 2 * ox) * c + t.k;
      best = to_acc(r[0]);
      uint8_t q = 0;
      const A v1 = to_acc(r[c]), v2 = to_acc(r[w * c]), v3 = to_acc(r[w * c + c]);
      if (v1 > best || v1 != v1) best = v1, q = 1;  // NaN wins, as torch's max_pool2d
      if (v2 > best || v2 != v2) best = v2, q = 2;
      if (v3 > best || v3 != v3) best = v3, q = 3;
      idx[out] = q;
    } else {
      best = to_acc(z[out]);
    }
    const A v = best > A(0) || best != best ? best : A(0);
    p[out] = from_acc<T>(v);
    sum += v;
  }
  if (part != nullptr) write_partial(sum, part, c, t);
}

template <typename T>
__global__ void centered_sq_kernel(const T* p, const acc_t<T>* mean, acc_t<T>* part, int64_t c, int64_t pix,
                                   int64_t nblk) {
  using A = acc_t<T>;
  const Tile t(nblk, c);
  A sum = 0;
  for (int64_t s = t.s0 + threadIdx.y; s < t.end(pix) && t.live; s += kRowsPerPass) {
    const A d = to_acc(p[(t.i * pix + s) * c + t.k]) - mean[t.k];
    sum += d * d;
  }
  write_partial(sum, part, c, t);
}

template <typename T>
__global__ void normalize_kernel(const T* p, const acc_t<T>* a, const acc_t<T>* b, T* y, acc_t<T>* part, int64_t c,
                                 int64_t pix, int64_t nblk) {
  using A = acc_t<T>;
  const Tile t(nblk, c);
  A sum = 0;
  for (int64_t s = t.s0 + threadIdx.y; s < t.end(pix) && t.live; s += kRowsPerPass) {
    const int64_t off = (t.i * pix + s) * c + t.k;
    const A v = a[t.k] * to_acc(p[off]) + b[t.k];
    y[off] = from_acc<T>(v);
    sum += v * v;
  }
  write_partial(sum, part, c, t);
}

template <typename T>
__device__ __forceinline__ acc_t<T> grad_at(const T* p, const T* grad_y, const acc_t<T>* gk, const acc_t<T>* a,
                                            const acc_t<T>* b, int64_t off, int64_t i, int64_t k, int64_t c) {
  const acc_t<T> d = gk[i * c + k] * (a[k] * to_acc(p[off]) + b[k]);
  return grad_y != nullptr ? d + to_acc(grad_y[off]) : d;
}

template <typename T>
__global__ void bwd_sums_kernel(const T* p, const T* grad_y, const acc_t<T>* gk, const acc_t<T>* a, const acc_t<T>* b,
                                const acc_t<T>* mean, acc_t<T>* part_dy, acc_t<T>* part_dyx, int64_t c, int64_t pix,
                                int64_t nblk) {
  using A = acc_t<T>;
  const Tile t(nblk, c);
  A s_dy = 0, s_dyx = 0;
  for (int64_t s = t.s0 + threadIdx.y; s < t.end(pix) && t.live; s += kRowsPerPass) {
    const int64_t off = (t.i * pix + s) * c + t.k;
    const A d = grad_at(p, grad_y, gk, a, b, off, t.i, t.k, c);
    s_dy += d;
    s_dyx += d * (to_acc(p[off]) - mean[t.k]);
  }
  write_partial(s_dy, part_dy, c, t);
  __syncthreads();  // the shared buffer is reused
  write_partial(s_dyx, part_dyx, c, t);
}

template <typename T>
__global__ void bwd_dz_kernel(const T* p, const T* grad_y, const acc_t<T>* gk, const uint8_t* idx, const acc_t<T>* a,
                              const acc_t<T>* b, const acc_t<T>* c0, const acc_t<T>* c1, T* dz, int64_t c, int64_t h,
                              int64_t w, int64_t wo, int64_t pix, int64_t nblk, bool pool) {
  using A = acc_t<T>;
  const Tile t(nblk, c);
  for (int64_t s = t.s0 + threadIdx.y; s < t.end(pix) && t.live; s += kRowsPerPass) {
    const int64_t off = (t.i * pix + s) * c + t.k;
    const A pv = to_acc(p[off]);
    const A dp = pv > A(0) ? a[t.k] * grad_at(p, grad_y, gk, a, b, off, t.i, t.k, c) + c0[t.k] + c1[t.k] * pv : A(0);
    if (pool) {
      const int64_t oy = s / wo, ox = s % wo;
      T* r = dz + ((t.i * h + 2 * oy) * w + 2 * ox) * c + t.k;
      const uint8_t q = idx[off];
      r[0] = from_acc<T>(q == 0 ? dp : A(0));
      r[c] = from_acc<T>(q == 1 ? dp : A(0));
      r[w * c] = from_acc<T>(q == 2 ? dp : A(0));
      r[w * c + c] = from_acc<T>(q == 3 ? dp : A(0));
    } else {
      dz[off] = from_acc<T>(dp);
    }
  }
}

dim3 grid_for(int64_t n, int64_t pix, int64_t c) {
  return dim3(static_cast<unsigned>(n * cwc_row_blocks(pix)), static_cast<unsigned>((c + kLanes - 1) / kLanes));
}

inline dim3 block_dim() { return dim3(kLanes, kRowsPerPass); }

}  // namespace

cudaError_t launch_cwc_pool_relu(DType dtype, const void* z, void* p, uint8_t* idx, void* part, int64_t n, int64_t c,
                                 int64_t h, int64_t w, bool pool, cudaStream_t stream) {
  const int64_t ho = pool ? h / 2 : h, wo = pool ? w / 2 : w, pix = ho * wo;
  if (n * pix * c == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    pool_relu_kernel<T><<<grid_for(n, pix, c), block_dim(), 0, stream>>>(static_cast<const T*>(z), static_cast<T*>(p),
                                                                         idx, static_cast<acc_t<T>*>(part), c, h, w, wo,
                                                                         pix, cwc_row_blocks(pix), pool);
    return cudaGetLastError();
  });
}

cudaError_t launch_cwc_centered_sq(DType dtype, const void* p, const void* mean, void* part, int64_t n, int64_t pix,
                                   int64_t c, cudaStream_t stream) {
  if (n * pix * c == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    centered_sq_kernel<T>
        <<<grid_for(n, pix, c), block_dim(), 0, stream>>>(static_cast<const T*>(p), static_cast<const acc_t<T>*>(mean),
                                                          static_cast<acc_t<T>*>(part), c, pix, cwc_row_blocks(pix));
    return cudaGetLastError();
  });
}

cudaError_t launch_cwc_normalize(DType dtype, const void* p, const void* a, const void* b, void* y, void* part,
                                 int64_t n, int64_t pix, int64_t c, cudaStream_t stream) {
  if (n * pix * c == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    normalize_kernel<T><<<grid_for(n, pix, c), block_dim(), 0, stream>>>(
        static_cast<const T*>(p), static_cast<const A*>(a), static_cast<const A*>(b), static_cast<T*>(y),
        static_cast<A*>(part), c, pix, cwc_row_blocks(pix));
    return cudaGetLastError();
  });
}

cudaError_t launch_cwc_bwd_sums(DType dtype, const void* p, const void* grad_y, const void* gk, const void* a,
                                const void* b, const void* mean, void* part_dy, void* part_dyx, int64_t n, int64_t pix,
                                int64_t c, cudaStream_t stream) {
  if (n * pix * c == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    bwd_sums_kernel<T><<<grid_for(n, pix, c), block_dim(), 0, stream>>>(
        static_cast<const T*>(p), static_cast<const T*>(grad_y), static_cast<const A*>(gk), static_cast<const A*>(a),
        static_cast<const A*>(b), static_cast<const A*>(mean), static_cast<A*>(part_dy), static_cast<A*>(part_dyx), c,
        pix, cwc_row_blocks(pix));
    return cudaGetLastError();
  });
}

cudaError_t launch_cwc_bwd_dz(DType dtype, const void* p, const void* grad_y, const void* gk, const uint8_t* idx,
                              const void* a, const void* b, const void* c0, const void* c1, void* dz, int64_t n,
                              int64_t c, int64_t h, int64_t w, bool pool, cudaStream_t stream) {
  const int64_t ho = pool ? h / 2 : h, wo = pool ? w / 2 : w, pix = ho * wo;
  if (n * pix * c == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    bwd_dz_kernel<T><<<grid_for(n, pix, c), block_dim(), 0, stream>>>(
        static_cast<const T*>(p), static_cast<const T*>(grad_y), static_cast<const A*>(gk), idx,
        static_cast<const A*>(a), static_cast<const A*>(b), static_cast<const A*>(c0), static_cast<const A*>(c1),
        static_cast<T*>(dz), c, h, w, wo, pix, cwc_row_blocks(pix), pool);
    return cudaGetLastError();
  });
}

}  // namespace ffops::gpu
