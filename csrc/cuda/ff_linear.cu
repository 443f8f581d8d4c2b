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
// tiles (blockIdx.y), each tile adding its part of sumsq (atomically, or see below).
//
// Column sums (pos_mean, grad_bias) are flushed once per block at the end: the whole-block path
// holds each column in one thread; the sub-warp path first reduces the groups of a warp with
// shuffles and the warps of the block in shared memory (in a fixed order). Each column's block sum
// is then added with one global atomic, or, in deterministic mode (a workspace given), stored in
// the block's row of a [blocks, out] buffer that sum_parts_kernel adds up in a fixed order; so are
// the per-tile sums of squares of rows split over column tiles. The grid is capped at one resident
// wave (occupancy API, cached per device), which bounds the atomics (or buffer rows) per column by
// the number of resident blocks. Accumulation is in float (double for double data).
//
// ff_label_rows (all-label prediction rows, no GEMM and no column sums) has a simpler mapping: one
// warp per output row, see label_rows_kernel.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "cuda/device_common.cuh"
#include "cuda/ff_linear.h"

namespace ffops::gpu {
namespace {

constexpr int kSubwarpBlock = 256;  // threads per block when a row takes <= 32 lanes

// relu that keeps NaN (torch.relu(NaN) == NaN): NaN < 0 is false.
template <typename A>
__device__ __forceinline__ A relu(A v) {
  return v < A(0) ? A(0) : v;
}

// Flushes this block's column partials: col[i][e] belongs to column (slot0 + i * group + lane) * N + e.
// det: stores the block's column sums in row blockIdx.x of colsum ([gridDim.x, nslots * N]), else
// adds them to colsum ([nslots * N]) atomically, nothing if !enabled. Must be reached by every
// thread of the block; `enabled` must be uniform across the block.
//  kBlock: every column of the tile is owned by one thread.
//  sub-warp: (one tile, slot0 == 0, kSubwarpBlock threads) the groups of a warp hold the same
//  columns: reduce them with shuffles, then the warps' copies in shared memory, in warp order.
template <typename A, int N, int I, bool kBlock>
__device__ __forceinline__ void flush_cols(A (&col)[I][N], int64_t slot0, int64_t nslots, int lane, int group, bool det,
                                           bool enabled, A* __restrict__ colsum) {
  if (det) {
    colsum += static_cast<int64_t>(blockIdx.x) * nslots * N;
  } else if (!enabled) {
    return;
  }
  const auto put = [&](int64_t c, A v) {
    if (det) {
      colsum[c] = v;
    } else {
      atomicAdd(colsum + c, v);
    }
  };
  if constexpr (kBlock) {
#pragma unroll
    for (int i = 0; i < I; ++i) {
      const int64_t s = slot0 + static_cast<int64_t>(i) * group + lane;
      if (s < nslots) {
#pragma unroll
        for (int e = 0; e < N; ++e) put(s * N + e, col[i][e]);
      }
    }
  } else {
    constexpr int kWarps = kSubwarpBlock / 32;
    constexpr int kCols = 32 * I * N;  // widest tile of a sub-warp group (group <= 32)
    __shared__ A part[kWarps][kCols];
#pragma unroll
    for (int i = 0; i < I; ++i) {
#pragma unroll
      for (int e = 0; e < N; ++e) {
        A v = col[i][e];
        for (int o = group; o < 32; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        col[i][e] = v;
      }
    }
    // Lanes < group of each warp (then lane == threadIdx.x & 31) write its copy of every column < ncols.
    if ((threadIdx.x & 31) < group) {
#pragma unroll
      for (int i = 0; i < I; ++i) {
        const int64_t s = static_cast<int64_t>(i) * group + lane;
        if (s < nslots) {
#pragma unroll
          for (int e = 0; e < N; ++e) part[threadIdx.x >> 5][s * N + e] = col[i][e];
        }
      }
    }
    __syncthreads();
    const int64_t tile = static_cast<int64_t>(group) * I;  // >= nslots for a sub-warp config
    const int64_t ncols = (nslots < tile ? nslots : tile) * N;
    for (int64_t c = threadIdx.x; c < ncols; c += blockDim.x) {
      A v = part[0][c];
#pragma unroll
      for (int w = 1; w < kWarps; ++w) v += part[w][c];
      put(c, v);
    }
  }
}

// ---- kernels --------------------------------------------------------------------------------

// Forward epilogue in place over h (see launch_ff_linear_fwd_epilogue). colsum: pos_mean before the
// division, see flush_cols. sumsq: [rows] when gridDim.y == 1; else per-tile partial sums, stored in
// row blockIdx.y of sumsq [gridDim.y, rows] when det, else added atomically (sumsq zeroed).
template <typename T, int N, int I, bool kBlock>
__global__ void __launch_bounds__(1024)
    fwd_epilogue_kernel(T* __restrict__ h, int64_t rows, int64_t out, int64_t nslots, int group,
                        const acc_t<T>* __restrict__ x_scale, const T* __restrict__ bias, int64_t n_pos, bool det,
                        acc_t<T>* __restrict__ sumsq, acc_t<T>* __restrict__ colsum) {
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
      if (gridDim.y > 1 && !det) {
        atomicAdd(sumsq + r, ss);
      } else {
        sumsq[blockIdx.y * rows + r] = ss;
      }
    }
  }
  // The block's lowest row is blockIdx.x * rpb: it saw a positive row iff that one is positive.
  const bool has_pos = static_cast<int64_t>(blockIdx.x) * (static_cast<int>(blockDim.x) / group) < n_pos;
  flush_cols<A, N, I, kBlock>(col, slot0, nslots, m.lane, group, det, has_pos, colsum);
}

// Backward epilogue (see launch_ff_linear_bwd_epilogue). colsum: grad_bias_acc, see flush_cols;
// pos_coef[j] = grad_pos_mean[j] / n_pos (nullptr: no pos_mean term).
template <typename T, int N, int I, bool kBlock>
__global__ void __launch_bounds__(1024)
    bwd_epilogue_kernel(const T* __restrict__ h, int64_t rows, int64_t out, int64_t nslots, int group,
                        const acc_t<T>* __restrict__ x_scale, const acc_t<T>* __restrict__ grad_sumsq,
                        const acc_t<T>* __restrict__ pos_coef, int64_t n_pos, T* __restrict__ u, bool det,
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
  flush_cols<A, N, I, kBlock>(col, slot0, nslots, m.lane, group, det, true, colsum);
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

// sum_parts_kernel's block: kSumCols columns x kSumLanes partial sums each.
constexpr int kSumCols = 32, kSumLanes = 8, kSumThreads = kSumCols * kSumLanes;

// dst[j] = (sum_{p < parts} part[p, j]) / d for j < n, part [parts, n]: in a fixed order (each of
// kSumLanes threads adds every kSumLanes-th row in turn, then their sums in lane order).
template <typename A>
__global__ void __launch_bounds__(kSumThreads)
    sum_parts_kernel(const A* __restrict__ part, int64_t parts, int64_t n, A d, A* __restrict__ dst) {
  __shared__ A sums[kSumLanes][kSumCols];
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSumCols + threadIdx.x;
  A v = A(0);
  if (j < n) {
    for (int64_t p = threadIdx.y; p < parts; p += kSumLanes) v += part[p * n + j];
  }
  sums[threadIdx.y][threadIdx.x] = v;
  __syncthreads();
  if (threadIdx.y == 0 && j < n) {
#pragma unroll
    for (int l = 1; l < kSumLanes; ++l) v += sums[l][threadIdx.x];
    dst[j] = div_rn(v, d);
  }
}

template <typename A>
cudaError_t launch_sum_parts(const void* part, int64_t parts, int64_t n, int64_t d, void* dst, cudaStream_t stream) {
  const unsigned blocks = static_cast<unsigned>((n + kSumCols - 1) / kSumCols);
  sum_parts_kernel<A><<<blocks, dim3(kSumCols, kSumLanes), 0, stream>>>(static_cast<const A*>(part), parts, n,
                                                                        static_cast<A>(d), static_cast<A*>(dst));
  return cudaGetLastError();
}

// ---- launch configuration -------------------------------------------------------------------

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

constexpr int kCachedDevices = 64;  // devices whose waves rows_grid caches (beyond: queried every launch)

// Blocks along rows: enough for all rows, at most one resident wave of the whole grid. The wave
// (SMs x resident blocks of Kernel per SM at c.threads) is queried once per device and block size,
// then read from a table (racing first queries store the same value).
template <auto Kernel>
cudaError_t rows_grid(const Cfg& c, int64_t rows, unsigned* grid_x) {
  static std::atomic<int> waves[kCachedDevices][32];  // [device][threads / 32 - 1]; 0: not queried yet
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess) return err;
  std::atomic<int>* const cached = dev < kCachedDevices ? &waves[dev][c.threads / 32 - 1] : nullptr;
  int wave = cached != nullptr ? cached->load(std::memory_order_relaxed) : 0;
  if (wave == 0) {
    int sms = 0, per_sm = 0;
    err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
    if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, c.threads, 0);
    if (err != cudaSuccess) return err;
    wave = sms * std::max(per_sm, 1);
    if (cached != nullptr) cached->store(wave, std::memory_order_relaxed);
  }
  const int64_t rpb = c.threads / c.group;
  const int64_t need = (rows + rpb - 1) / rpb;
  *grid_x = static_cast<unsigned>(std::min(need, std::max<int64_t>(wave / c.tiles, 1)));
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

// Calls f(kernel, cfg, nslots, grid_x) with the forward epilogue kernel that fits and its launch
// configuration (the launcher and its workspace size share it).
template <typename T, typename F>
cudaError_t fwd_plan(const void* h, int64_t rows, int64_t out, const void* bias, F&& f) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const bool vec = out % kVec == 0 && aligned16(h) && (bias == nullptr || aligned16(bias));
  return dispatch_variant<T, 64>(out, vec, [&](auto v, const Cfg& c, int64_t nslots) -> cudaError_t {
    using V = decltype(v);
    constexpr auto kernel = fwd_epilogue_kernel<T, V::n, V::iters, V::block>;
    unsigned grid_x = 0;
    const cudaError_t e = rows_grid<kernel>(c, rows, &grid_x);
    return e != cudaSuccess ? e : f(kernel, c, nslots, grid_x);
  });
}

// As fwd_plan, for the backward epilogue kernel.
template <typename T, typename F>
cudaError_t bwd_plan(const void* h, int64_t rows, int64_t out, const void* u, F&& f) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  const bool vec = out % kVec == 0 && aligned16(h) && aligned16(u);
  return dispatch_variant<T, 32>(out, vec, [&](auto v, const Cfg& c, int64_t nslots) -> cudaError_t {
    using V = decltype(v);
    constexpr auto kernel = bwd_epilogue_kernel<T, V::n, V::iters, V::block>;
    unsigned grid_x = 0;
    const cudaError_t e = rows_grid<kernel>(c, rows, &grid_x);
    return e != cudaSuccess ? e : f(kernel, c, nslots, grid_x);
  });
}

}  // namespace

// ---- launchers (see ff_linear.h for the contracts) -------------------------------------------

cudaError_t ff_linear_fwd_epilogue_workspace(DType dtype, const void* h, int64_t rows, int64_t out, const void* bias,
                                             int64_t* elems) {
  *elems = 0;
  if (rows <= 0 || out <= 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    return fwd_plan<decltype(tag)>(h, rows, out, bias, [&](auto, const Cfg& c, int64_t, unsigned grid_x) {
      *elems = int64_t{grid_x} * out + (c.tiles > 1 ? int64_t{c.tiles} * rows : 0);
      return cudaSuccess;
    });
  });
}

cudaError_t launch_ff_linear_fwd_epilogue(DType dtype, void* h, int64_t rows, int64_t out, const void* x_scale,
                                          const void* bias, int64_t n_pos, void* sumsq, void* pos_mean, void* workspace,
                                          cudaStream_t stream) {
  if (rows < 0 || out < 0 || n_pos < 0 || n_pos > rows) return cudaErrorInvalidValue;
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    if (out == 0) {  // empty h and pos_mean; every row's sum of squares is 0
      return rows > 0 ? cudaMemsetAsync(sumsq, 0, static_cast<size_t>(rows) * sizeof(A), stream) : cudaSuccess;
    }
    const bool det = workspace != nullptr && rows > 0;
    if (!det) {
      const cudaError_t err = cudaMemsetAsync(pos_mean, 0, static_cast<size_t>(out) * sizeof(A), stream);
      if (err != cudaSuccess) return err;
    }
    if (rows == 0) return launch_div<A>(pos_mean, out, n_pos, pos_mean, stream);  // 0 / 0 = NaN
    return fwd_plan<T>(h, rows, out, bias, [&](auto kernel, const Cfg& c, int64_t nslots, unsigned grid_x) {
      // det: the workspace holds the blocks' column sums [grid_x, out], then the tiles' row sums [tiles, rows].
      A* const cols = det ? static_cast<A*>(workspace) : static_cast<A*>(pos_mean);
      A* const row_sums = det && c.tiles > 1 ? cols + int64_t{grid_x} * out : static_cast<A*>(sumsq);
      cudaError_t e = cudaSuccess;
      if (!det && c.tiles > 1) e = cudaMemsetAsync(sumsq, 0, static_cast<size_t>(rows) * sizeof(A), stream);
      if (e != cudaSuccess) return e;
      kernel<<<dim3(grid_x, c.tiles), c.threads, 0, stream>>>(static_cast<T*>(h), rows, out, nslots, c.group,
                                                              static_cast<const A*>(x_scale),
                                                              static_cast<const T*>(bias), n_pos, det, row_sums, cols);
      e = cudaGetLastError();
      if (e == cudaSuccess && det && c.tiles > 1) e = launch_sum_parts<A>(row_sums, c.tiles, rows, 1, sumsq, stream);
      if (e != cudaSuccess) return e;
      // pos_mean = column sum / n_pos (0 / 0 = NaN when there is no positive row).
      if (det) return launch_sum_parts<A>(cols, grid_x, out, n_pos, pos_mean, stream);
      return launch_div<A>(pos_mean, out, n_pos, pos_mean, stream);
    });
  });
}

cudaError_t ff_linear_bwd_epilogue_workspace(DType dtype, const void* h, int64_t rows, int64_t out, const void* u,
                                             int64_t* elems) {
  *elems = 0;
  if (rows <= 0 || out <= 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    return bwd_plan<decltype(tag)>(h, rows, out, u, [&](auto, const Cfg&, int64_t, unsigned grid_x) {
      *elems = int64_t{grid_x} * out;
      return cudaSuccess;
    });
  });
}

cudaError_t launch_ff_linear_bwd_epilogue(DType dtype, const void* h, int64_t rows, int64_t out, const void* x_scale,
                                          const void* grad_sumsq, const void* grad_pos_mean, int64_t n_pos, void* u,
                                          void* grad_bias_acc, void* pos_coef, void* workspace, cudaStream_t stream) {
  if (rows < 0 || out < 0 || n_pos < 0 || n_pos > rows) return cudaErrorInvalidValue;
  if (out == 0) return cudaSuccess;  // u and grad_bias_acc are empty
  return dispatch_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = decltype(tag);
    using A = acc_t<T>;
    const bool det = workspace != nullptr && rows > 0;
    cudaError_t err = cudaSuccess;
    if (!det) err = cudaMemsetAsync(grad_bias_acc, 0, static_cast<size_t>(out) * sizeof(A), stream);
    if (err != cudaSuccess || rows == 0) return err;
    // The pos_mean term, grad_pos_mean / n_pos per column, divided once (no positive row: none).
    const bool with_pos = grad_pos_mean != nullptr && n_pos > 0;
    if (with_pos) {
      err = launch_div<A>(grad_pos_mean, out, n_pos, pos_coef, stream);
      if (err != cudaSuccess) return err;
    }
    return bwd_plan<T>(h, rows, out, u, [&](auto kernel, const Cfg& c, int64_t nslots, unsigned grid_x) {
      A* const cols = det ? static_cast<A*>(workspace) : static_cast<A*>(grad_bias_acc);  // det: [grid_x, out]
      kernel<<<dim3(grid_x, c.tiles), c.threads, 0, stream>>>(
          static_cast<const T*>(h), rows, out, nslots, c.group, static_cast<const A*>(x_scale),
          static_cast<const A*>(grad_sumsq), with_pos ? static_cast<const A*>(pos_coef) : nullptr, n_pos,
          static_cast<T*>(u), det, cols);
      const cudaError_t e = cudaGetLastError();
      if (e != cudaSuccess || !det) return e;
      return launch_sum_parts<A>(cols, grid_x, out, 1, grad_bias_acc, stream);
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
      constexpr auto kernel = label_rows_kernel<T, N, decltype(bias_tag)::value>;
      unsigned grid_x = 0;
      const Cfg one_warp_per_row{kLabelRowsBlock, 1, 32, false};
      const cudaError_t e = rows_grid<kernel>(one_warp_per_row, rows * labels, &grid_x);
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
