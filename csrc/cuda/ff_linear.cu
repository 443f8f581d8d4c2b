// CUDA epilogues of the fused Forward-Forward linear layer (ff_linear_fwd / ff_linear_bwd) and its
// all-label prediction rows (ff_label_rows). The GEMMs run in cuBLAS on the torch side
// (csrc/cuda/ff_linear_cuda.cpp) or in the caller; these kernels do the rest in one pass over the
// [rows, out] matrix. No torch headers: launchers in ff_linear.h.
//
// Work mapping (as in goodness.cu): each row is handled by a "group" of threads, a power-of-two slice
// of a warp (1..32 lanes, 256-thread blocks) for short rows, or the whole block (128..1024
// threads) for long ones; blocks loop over rows (grid-stride, the loop is uniform across the
// block so every lane reaches every shuffle / barrier). A row is cut into "slots" of N elements
// (one 16-byte access when vectorized, else N = 1); lane `l` of a group owns the slots
// slot0 + i * group + l, i < I, so it keeps the column partial sums of its N * I columns in
// registers across all the rows it visits. Rows wider than group * I slots are split into column
// tiles (blockIdx.y), each tile adding its part of sumsq atomically.
//
// Column sums (pos_mean, grad_bias) are flushed once per block at the end: the whole-block path
// adds each column with one global atomic; the sub-warp path first reduces the groups of a warp
// with shuffles and the warps of the block in shared memory. The grid is capped at one resident
// wave (occupancy API), which bounds the number of atomics per column by the number of resident
// blocks. Accumulation is in float (double for double data).
//
// ff_label_rows (all-label prediction rows, no GEMM and no column sums) has a simpler mapping: one
// warp per output row, see label_rows_kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/device_common.cuh"
#include "cuda/ff_linear.h"

namespace ffops::gpu {
namespace {

// relu that keeps NaN (torch.relu(NaN) == NaN): NaN < 0 is false.
template <typename A>
__device__ __forceinline__ A relu(A v) {
  return v < A(0) ? A(0) : v;
}

// Adds this block's column partials to colsum (global, opmath). col[i][e] belongs to column
// (slot0 + i * group + lane) * N + e. Must be reached by every thread of the block; `enabled`
// must be uniform across the block (false: the block adds nothing).
//  kBlock: every column of the tile is owned by one thread -> one global atomic per column.
//  sub-warp: (one tile, slot0 == 0) the groups of a warp hold the same columns: reduce them with
//  shuffles, the warps in shared memory, then one global atomic per column.
template <typename A, int N, int I, bool kBlock>
__device__ __forceinline__ void flush_cols(A (&col)[I][N], int64_t slot0, int64_t nslots, int lane, int group,
                                           bool enabled, A* __restrict__ colsum) {
  if (!enabled) return;
  if constexpr (kBlock) {
#pragma unroll
    for (int i = 0; i < I; ++i) {
      const int64_t s = slot0 + static_cast<int64_t>(i) * group + lane;
      if (s < nslots) {
#pragma unroll
        for (int e = 0; e < N; ++e) atomicAdd(colsum + s * N + e, col[i][e]);
      }
    }
  } else {
    constexpr int kCols = 32 * I * N;  // widest tile of a sub-warp group (group <= 32)
    __shared__ A part[kCols];
    for (int c = threadIdx.x; c < kCols; c += blockDim.x) part[c] = A(0);
#pragma unroll
    for (int i = 0; i < I; ++i) {
#pragma unroll
      for (int e = 0; e < N; ++e) {
        A v = col[i][e];
        for (int o = group; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        col[i][e] = v;
      }
    }
    __syncthreads();                   // part[] zeroed
    if ((threadIdx.x & 31) < group) {  // then lane == threadIdx.x & 31: one copy per warp
#pragma unroll
      for (int i = 0; i < I; ++i) {
        const int64_t s = static_cast<int64_t>(i) * group + lane;
        if (s < nslots) {
#pragma unroll
          for (int e = 0; e < N; ++e) atomicAdd(&part[s * N + e], col[i][e]);
        }
      }
    }
    __syncthreads();
    const int64_t tile = static_cast<int64_t>(group) * I;  // >= nslots for a sub-warp config
    const int64_t ncols = (nslots < tile ? nslots : tile) * N;
    for (int64_t c = threadIdx.x; c < ncols; c += blockDim.x) atomicAdd(colsum + c, part[c]);
  }
}

// ---- kernels --------------------------------------------------------------------------------

// Forward epilogue in place over h (see launch_ff_linear_fwd_epilogue). colsum (= pos_mean
// before the division) is zeroed; so is sumsq when atomic_rows (gridDim.y > 1).
template <typename T, int N, int I, bool kBlock>
__global__ void __launch_bounds__(1024)
    fwd_epilogue_kernel(T* __restrict__ h, int64_t rows, int64_t out, int64_t nslots, int group,
                        const acc_t<T>* __restrict__ x_scale, const T* __restrict__ bias, int64_t n_pos,
                        bool atomic_rows, acc_t<T>* __restrict__ sumsq, acc_t<T>* __restrict__ colsum) {
  using A = acc_t<T>;
  using P = Pack<T, N>;
  const RowMap m(group);
  const int64_t slot0 = static_cast<int64_t>(blockIdx.y) * group * I;
  A col[I][N] = {};                                            // column partial sums, in registers
  for (int64_t base = m.first; base < rows; base += m.step) {  // uniform across the block
    const int64_t r = base + m.sub;
    A ss = A(0);
    if (r < rows) {
      P* hr = reinterpret_cast<P*>(h + r * out);
      const A sc = x_scale != nullptr ? x_scale[r] : A(1);
      const bool pos = r < n_pos;
#pragma unroll
      for (int i = 0; i < I; ++i) {
        const int64_t s = slot0 + static_cast<int64_t>(i) * group + m.lane;
        if (s < nslots) {
          P p = hr[s];
          A b[N];  // bias (0 without)
#pragma unroll
          for (int e = 0; e < N; ++e) b[e] = A(0);
          if (bias != nullptr) {
            const P bp = reinterpret_cast<const P*>(bias)[s];
#pragma unroll
            for (int e = 0; e < N; ++e) b[e] = to_acc(bp.v[e]);
          }
#pragma unroll
          for (int e = 0; e < N; ++e) {
            const A v = relu(mul_rn(sc, to_acc(p.v[e])) + b[e]);
            p.v[e] = from_acc<T>(v);
            ss += v * v;              // unrounded h
            if (pos) col[i][e] += v;  // unrounded h too
          }
          hr[s] = p;
        }
      }
    }
    ss = group_allreduce<kBlock>(ss, group);
    if (r < rows && m.lane == 0) {
      if (atomic_rows) {
        atomicAdd(sumsq + r, ss);
      } else {
        sumsq[r] = ss;
      }
    }
  }
  // The block's lowest row is blockIdx.x * rpb: it saw a positive row iff that one is positive.
  const bool has_pos = static_cast<int64_t>(blockIdx.x) * (static_cast<int>(blockDim.x) / group) < n_pos;
  flush_cols<A, N, I, kBlock>(col, slot0, nslots, m.lane, group, has_pos, colsum);
}

// Backward epilogue (see launch_ff_linear_bwd_epilogue). colsum (= grad_bias_acc) is zeroed;
// pos_coef[j] = grad_pos_mean[j] / n_pos (nullptr: no pos_mean term).
template <typename T, int N, int I, bool kBlock>
__global__ void __launch_bounds__(1024)
    bwd_epilogue_kernel(const T* __restrict__ h, int64_t rows, int64_t out, int64_t nslots, int group,
                        const acc_t<T>* __restrict__ x_scale, const acc_t<T>* __restrict__ grad_sumsq,
                        const acc_t<T>* __restrict__ pos_coef, int64_t n_pos, T* __restrict__ u,
                        acc_t<T>* __restrict__ colsum) {
  using A = acc_t<T>;
  using P = Pack<T, N>;
  const RowMap m(group);
  const int64_t slot0 = static_cast<int64_t>(blockIdx.y) * group * I;
  A col[I][N] = {};  // column partial sums, in registers
  for (int64_t base = m.first; base < rows; base += m.step) {
    const int64_t r = base + m.sub;
    if (r >= rows) continue;  // no group-wide operation in this loop
    const P* hr = reinterpret_cast<const P*>(h + r * out);
    P* ur = reinterpret_cast<P*>(u + r * out);
    const A sc = x_scale != nullptr ? x_scale[r] : A(1);
    const A g2 = A(2) * grad_sumsq[r];
    const bool pos = pos_coef != nullptr && r < n_pos;
#pragma unroll
    for (int i = 0; i < I; ++i) {
      const int64_t s = slot0 + static_cast<int64_t>(i) * group + m.lane;
      if (s < nslots) {
        const P p = hr[s];
        P o;
#pragma unroll
        for (int e = 0; e < N; ++e) {
          const A hv = to_acc(p.v[e]);
          A d = mul_rn(g2, hv);
          if (pos && hv > A(0)) d += pos_coef[s * N + e];
          col[i][e] += d;
          o.v[e] = from_acc<T>(sc * d);
        }
        ur[s] = o;
      }
    }
  }
  flush_cols<A, N, I, kBlock>(col, slot0, nslots, m.lane, group, true, colsum);
}

constexpr int kLabelRowsBlock = 256;  // threads per block of label_rows_kernel: 8 warps, 8 rows at a time

// All-label rows (see launch_ff_label_rows): one warp per output row r = b * labels + c, warps
// striding over the rows; a row is walked in slots of N elements (one 16-byte access when
// vectorized, else N = 1), lane l owning slots l, l + 32, ...; the row's sum of squares is a warp
// reduction. The labels rows of a sample reread its row of pre (from cache). The loop condition is
// uniform across a warp, so every lane reaches the shuffles.
template <typename T, int N, bool kBias>
__global__ void __launch_bounds__(kLabelRowsBlock)
    label_rows_kernel(const T* __restrict__ pre, int64_t rows, int64_t out, int64_t nslots,
                      const acc_t<T>* __restrict__ on, const acc_t<T>* __restrict__ scale, const T* __restrict__ wt,
                      int64_t labels, const T* __restrict__ bias, T* __restrict__ h, acc_t<T>* __restrict__ sumsq) {
  using A = acc_t<T>;
  using P = Pack<T, N>;
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t step = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  const int64_t total = rows * labels;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5); r < total; r += step) {
    const int64_t b = r / labels;
    const int64_t c = r - b * labels;
    const P* pr = reinterpret_cast<const P*>(pre + b * out);
    const P* wr = reinterpret_cast<const P*>(wt + c * out);
    P* hr = reinterpret_cast<P*>(h + r * out);
    const A o = on[b];
    const A sc = scale != nullptr ? scale[b] : A(1);
    A ss = A(0);
    for (int64_t s = lane; s < nslots; s += 32) {
      const P p = pr[s];
      const P w = wr[s];
      P q;  // the bias, then (element by element) the output
      if constexpr (kBias) q = reinterpret_cast<const P*>(bias)[s];
#pragma unroll
      for (int e = 0; e < N; ++e) {
        A v = sc * (to_acc(p.v[e]) + o * to_acc(w.v[e]));
        if constexpr (kBias) v += to_acc(q.v[e]);
        v = relu(v);
        q.v[e] = from_acc<T>(v);
        ss += v * v;  // unrounded h
      }
      hr[s] = q;
    }
    ss = warp_allreduce(ss, 32);
    if (lane == 0) sumsq[r] = ss;
  }
}

// dst[j] = src[j] / d for j < n (dst may be src).
template <typename A>
__global__ void div_kernel(const A* src, int64_t n, A d, A* dst) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < n; j += step)
    dst[j] = div_rn(src[j], d);
}

template <typename A>
cudaError_t launch_div(const void* src, int64_t n, int64_t d, void* dst, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 1024));
  div_kernel<A><<<blocks, 256, 0, stream>>>(static_cast<const A*>(src), n, static_cast<A>(d), static_cast<A*>(dst));
  return cudaGetLastError();
}

// ---- launch configuration -------------------------------------------------------------------

constexpr int kSubwarpBlock = 256;  // threads per block when a row takes <= 32 lanes

struct Cfg {
  unsigned threads;
  unsigned tiles;  // column tiles (gridDim.y)
  int group;       // threads per row
  bool block;      // group == whole block
};

// nslots: accesses per row (> 0); iters: slots per thread (I). About I slots per lane.
Cfg make_cfg(int64_t nslots, int iters) {
  Cfg c{kSubwarpBlock, 1, 1, false};
  if (nslots <= 32 * iters) {  // sub-warp group: power of two in [1, 32]
    const int64_t want = (nslots + iters - 1) / iters;
    while (c.group < 32 && c.group < want) c.group <<= 1;
  } else {
    // Whole block: multiple of 32 in [128, 1024]; column tiles for rows wider than 1024 * I.
    int64_t t = ((nslots + iters - 1) / iters + 31) / 32 * 32;
    t = std::min<int64_t>(std::max<int64_t>(t, 128), 1024);
    const int64_t per_tile = t * iters;
    c.tiles = static_cast<unsigned>(std::min<int64_t>((nslots + per_tile - 1) / per_tile, 1 << 30));
    c.group = static_cast<int>(t);
    c.threads = static_cast<unsigned>(t);
    c.block = true;
  }
  return c;
}

// Blocks along rows: enough for all rows, at most one resident wave of the whole grid.
template <typename Kernel>
cudaError_t rows_grid(Kernel kernel, const Cfg& c, int64_t rows, unsigned* grid_x) {
  int dev = 0, sms = 0, per_sm = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, c.threads, 0);
  if (err != cudaSuccess) return err;
  const int64_t rpb = c.threads / c.group;
  const int64_t need = (rows + rpb - 1) / rpb;
  const int64_t wave = std::max<int64_t>(int64_t{sms} * std::max(per_sm, 1) / c.tiles, 1);
  *grid_x = static_cast<unsigned>(std::min(need, wave));
  return cudaSuccess;
}

template <int N, int I, bool B>
struct Variant {
  static constexpr int n = N;
  static constexpr int iters = I;
  static constexpr bool block = B;
};

// Calls launch(Variant<N, I, block>{}, cfg, nslots) for the access width and mapping that fit.
// I: kColBytes bytes of column partials per thread (N * I * sizeof(opmath), I <= 8), so that the
// kernels fit the 64 registers that 1024-thread blocks allow without spilling.
template <typename T, int kColBytes, typename F>
cudaError_t dispatch_variant(int64_t out, bool vec, F&& launch) {
  const auto run = [&](auto n_tag) -> cudaError_t {
    constexpr int N = decltype(n_tag)::value;
    constexpr int I = std::max<int>(1, std::min<int>(8, static_cast<int>(kColBytes / (N * sizeof(acc_t<T>)))));
    const int64_t nslots = out / N;
    const Cfg c = make_cfg(nslots, I);
    if (c.tiles > 65535) return cudaErrorInvalidConfiguration;
    if (c.block) return launch(Variant<N, I, true>{}, c, nslots);
    return launch(Variant<N, I, false>{}, c, nslots);
  };
  if (vec) return run(std::integral_constant<int, static_cast<int>(16 / sizeof(T))>{});
  return run(std::integral_constant<int, 1>{});
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

// ---- launchers (see ff_linear.h for the contracts) -------------------------------------------

cudaError_t launch_ff_linear_fwd_epilogue(DType dtype, void* h, int64_t rows, int64_t out, const void* x_scale,
                                          const void* bias, int64_t n_pos, void* sumsq, void* pos_mean,
                                          cudaStream_t stream) {
  if (rows < 0 || out < 0 || n_pos < 0 || n_pos > rows) return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    if (out == 0) {  // empty h and pos_mean; every row's sum of squares is 0
      return rows > 0 ? cudaMemsetAsync(sumsq, 0, static_cast<size_t>(rows) * sizeof(A), stream) : cudaSuccess;
    }
    cudaError_t err = cudaMemsetAsync(pos_mean, 0, static_cast<size_t>(out) * sizeof(A), stream);
    if (err != cudaSuccess) return err;
    if (rows > 0) {
      constexpr int kVec = static_cast<int>(16 / sizeof(T));
      const bool vec = out % kVec == 0 && aligned16(h) && (bias == nullptr || aligned16(bias));
      err = dispatch_variant<T, 64>(out, vec, [&](auto v, const Cfg& c, int64_t nslots) -> cudaError_t {
        using V = decltype(v);
        const auto kernel = fwd_epilogue_kernel<T, V::n, V::iters, V::block>;
        unsigned grid_x = 0;
        cudaError_t e = rows_grid(kernel, c, rows, &grid_x);
        if (e == cudaSuccess && c.tiles > 1)
          e = cudaMemsetAsync(sumsq, 0, static_cast<size_t>(rows) * sizeof(A), stream);
        if (e != cudaSuccess) return e;
        kernel<<<dim3(grid_x, c.tiles), c.threads, 0, stream>>>(
            static_cast<T*>(h), rows, out, nslots, c.group, static_cast<const A*>(x_scale), static_cast<const T*>(bias),
            n_pos, c.tiles > 1, static_cast<A*>(sumsq), static_cast<A*>(pos_mean));
        return cudaGetLastError();
      });
      if (err != cudaSuccess) return err;
    }
    // pos_mean = column sum / n_pos (0 / 0 = NaN when there is no positive row).
    return launch_div<A>(pos_mean, out, n_pos, pos_mean, stream);
  });
}

cudaError_t launch_ff_linear_bwd_epilogue(DType dtype, const void* h, int64_t rows, int64_t out, const void* x_scale,
                                          const void* grad_sumsq, const void* grad_pos_mean, int64_t n_pos, void* u,
                                          void* grad_bias_acc, void* pos_coef, cudaStream_t stream) {
  if (rows < 0 || out < 0 || n_pos < 0 || n_pos > rows) return cudaErrorInvalidValue;
  if (out == 0) return cudaSuccess;  // u and grad_bias_acc are empty
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    cudaError_t err = cudaMemsetAsync(grad_bias_acc, 0, static_cast<size_t>(out) * sizeof(A), stream);
    if (err != cudaSuccess || rows == 0) return err;
    // The pos_mean term, grad_pos_mean / n_pos per column, divided once (no positive row: none).
    const bool with_pos = grad_pos_mean != nullptr && n_pos > 0;
    if (with_pos) {
      err = launch_div<A>(grad_pos_mean, out, n_pos, pos_coef, stream);
      if (err != cudaSuccess) return err;
    }
    constexpr int kVec = static_cast<int>(16 / sizeof(T));
    const bool vec = out % kVec == 0 && aligned16(h) && aligned16(u);
    return dispatch_variant<T, 32>(out, vec, [&](auto v, const Cfg& c, int64_t nslots) -> cudaError_t {
      using V = decltype(v);
      const auto kernel = bwd_epilogue_kernel<T, V::n, V::iters, V::block>;
      unsigned grid_x = 0;
      const cudaError_t e = rows_grid(kernel, c, rows, &grid_x);
      if (e != cudaSuccess) return e;
      kernel<<<dim3(grid_x, c.tiles), c.threads, 0, stream>>>(
          static_cast<const T*>(h), rows, out, nslots, c.group, static_cast<const A*>(x_scale),
          static_cast<const A*>(grad_sumsq), with_pos ? static_cast<const A*>(pos_coef) : nullptr, n_pos,
          static_cast<T*>(u), static_cast<A*>(grad_bias_acc));
      return cudaGetLastError();
    });
  });
}

cudaError_t launch_ff_label_rows(DType dtype, const void* pre, int64_t rows, int64_t out, const void* on,
                                 const void* scale, const void* wt, int64_t labels, const void* bias, void* h,
                                 void* sumsq, cudaStream_t stream) {
  if (rows < 0 || out < 0 || labels < 1) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;  // h and sumsq are empty
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const auto launch = [&](auto n_tag, auto bias_tag) -> cudaError_t {
      constexpr int N = decltype(n_tag)::value;
      const auto kernel = label_rows_kernel<T, N, decltype(bias_tag)::value>;
      unsigned grid_x = 0;
      const Cfg one_warp_per_row{kLabelRowsBlock, 1, 32, false};
      const cudaError_t e = rows_grid(kernel, one_warp_per_row, rows * labels, &grid_x);
      if (e != cudaSuccess) return e;
      kernel<<<grid_x, kLabelRowsBlock, 0, stream>>>(
          static_cast<const T*>(pre), rows, out, out / N, static_cast<const A*>(on), static_cast<const A*>(scale),
          static_cast<const T*>(wt), labels, static_cast<const T*>(bias), static_cast<T*>(h), static_cast<A*>(sumsq));
      return cudaGetLastError();
    };
    constexpr int kVec = static_cast<int>(16 / sizeof(T));
    const bool vec =
        out % kVec == 0 && aligned16(pre) && aligned16(wt) && aligned16(h) && (bias == nullptr || aligned16(bias));
    const auto with_bias = [&](auto n_tag) -> cudaError_t {
      if (bias != nullptr) return launch(n_tag, std::true_type{});
      return launch(n_tag, std::false_type{});
    };
    if (vec) return with_bias(std::integral_constant<int, kVec>{});
    return with_bias(std::integral_constant<int, 1>{});
  });
}

}  // namespace ffops::gpu
