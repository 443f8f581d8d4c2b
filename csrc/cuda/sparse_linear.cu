// CUDA kernels of the sparse linear layer (sparse_linear_fwd / sparse_linear_bwd): SpMM forward over
// the CSR rows, fused SpMM (dX) + SDDMM (dvalues) backward over the CSC columns. No torch headers:
// launchers in sparse_linear.h, torch side in sparse_linear_cuda.cpp, CPU kernels in
// csrc/cpu/sparse_linear.cpp.
//
// Work mapping. Activations are feature-major, so a nonzero touches one contiguous row of the batch
// (xt[col, :] in the forward, dyt[row, :] in the backward). A warp handles one output row (forward)
// or one input column (backward) and a "batch tile": the batch is cut into slots of V elements
// (one 16-byte access when vectorized, else V = 1), and the warp is split into 32 / group nonzero
// slices of `group` lanes (group a power of two <= 32): lane = slice * group + slot-in-tile. Lane
// (ks, bb) walks the nonzeros beg + ks, beg + ks + 32 / group, ... of the row / column over the
// slot tile * group + bb. Wide batches use group = 32 (one slice: every lane sees every nonzero,
// the loads over the batch are coalesced); narrow ones put the spare lanes on the nonzeros and
// sum the slices with shuffles at the end. Blocks loop over (row or column, tile) items in a
// grid-stride loop that is uniform per warp, so every lane reaches every shuffle.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda/device_common.cuh"
#include "cuda/sparse_linear.h"

namespace ffops::gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kUnroll = 4;                        // nonzeros in flight per lane
constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // grid-stride beyond this
constexpr int64_t kBwdTargetWarps = 16384;        // backward: split the batch until this many items

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> zero_pack() {
  Pack<T, V> p;
#pragma unroll
  for (int e = 0; e < V; ++e) p.v[e] = from_acc<T>(acc_t<T>(0));
  return p;
}

// Lane coordinates within a warp: bb = slot within the batch tile, ks = nonzero slice.
struct Lanes {
  int bb, ks, nks;
  __device__ __forceinline__ explicit Lanes(int group) {
    const int lane = static_cast<int>(threadIdx.x) & 31;
    bb = lane & (group - 1);
    ks = lane / group;
    nks = 32 / group;
  }
};

// Sum over the lanes with the same bb (the nonzero slices); every lane gets the sum.
template <typename A, int V>
__device__ __forceinline__ void sum_slices(A (&v)[V], int group) {
  for (int o = group; o < 32; o <<= 1) {
#pragma unroll
    for (int e = 0; e < V; ++e) v[e] += __shfl_xor_sync(0xffffffffu, v[e], o);
  }
}

// ---- forward: yt[i, :] = bias[i] + sum_k values[k] * xt[col[k], :] -------------------------------

// Item it = (row i, tile): slots s = tile * group + bb (s < nslots = B / V).
template <typename T, typename I, int V>
__global__ void __launch_bounds__(kThreads)
    spmm_fwd_kernel(const T* __restrict__ xt, const T* __restrict__ values, const I* __restrict__ crow,
                    const I* __restrict__ col, const T* __restrict__ bias, T* __restrict__ yt, int64_t n_rows,
                    int64_t nslots, int group, int64_t tiles) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  const P* __restrict__ x = reinterpret_cast<const P*>(xt);
  const Lanes ln(group);
  const int64_t items = n_rows * tiles;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t it = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); it < items; it += step) {
    const int64_t i = it / tiles;
    const int64_t s = (it - i * tiles) * group + ln.bb;
    const bool active = s < nslots;
    const int64_t end = static_cast<int64_t>(crow[i + 1]);
    int64_t k = active ? static_cast<int64_t>(crow[i]) + ln.ks : end;  // this lane's nonzeros: k, k + nks, ...
    A acc[V] = {};
    // kUnroll nonzeros at a time (independent loads in flight), then the tail; per lane, no shuffles.
    for (; k + (kUnroll - 1) * ln.nks < end; k += kUnroll * ln.nks) {
      A w[kUnroll];
      P xv[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t kk = k + u * ln.nks;
        w[u] = to_acc(values[kk]);
        xv[u] = x[static_cast<int64_t>(col[kk]) * nslots + s];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += w[u] * to_acc(xv[u].v[e]);
      }
    }
    for (; k < end; k += ln.nks) {
      const A w = to_acc(values[k]);
      const P xv = x[static_cast<int64_t>(col[k]) * nslots + s];
#pragma unroll
      for (int e = 0; e < V; ++e) acc[e] += w * to_acc(xv.v[e]);
    }
    sum_slices<A, V>(acc, group);
    if (active && ln.ks == 0) {
      const A b = bias != nullptr ? to_acc(bias[i]) : A(0);
      P out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(acc[e] + b);
      reinterpret_cast<P*>(yt)[i * nslots + s] = out;
    }
  }
}

// ---- backward: one pass over the CSC order ----------------------------------------------------
//
// Item it = (column j, span): the span is a run of span_len consecutive batch tiles, which the warp
// visits one after the other. Per tile, each nonzero k of column j (row r = t_row[k]) loads
// dyt[r, tile] once and uses it twice:
//   dx   += values[t_perm[k]] * dyt[r, tile]        (per lane, summed over the slices at the end)
//   dot_k = sum over the tile of dyt[r, tile] * xt[j, tile]   (shuffle sum over the group's lanes)
// dxt[j, tile] is written by exactly one lane. The partial dots are combined deterministically, no
// atomics: with a single tile (tiles == 1, `ws` null) dot_k is complete and goes straight to
// dvalues[t_perm[k]]; otherwise the span's tiles are summed in order into the opmath workspace
// ws[span, k] (the same lane reads and writes a given entry, so program order suffices), and
// dvalues_sum_kernel adds the spans in order. Either output may be absent (dxt null; ws and
// dvalues both null).
template <typename T, typename I, int V>
__global__ void __launch_bounds__(kThreads)
    spmm_bwd_kernel(const T* __restrict__ dyt, const T* __restrict__ xt, const T* __restrict__ values,
                    const I* __restrict__ t_ptr, const I* __restrict__ t_row, const I* __restrict__ t_perm,
                    int64_t n_cols, int64_t nnz, int64_t nslots, int group, int64_t tiles, int64_t spans,
                    int64_t span_len, T* __restrict__ dxt, acc_t<T>* __restrict__ ws, T* __restrict__ dvalues) {
  using A = acc_t<T>;
  using P = Pack<T, V>;
  const P* __restrict__ dy_p = reinterpret_cast<const P*>(dyt);
  const P* __restrict__ x_p = reinterpret_cast<const P*>(xt);
  const bool need_dx = dxt != nullptr;
  const bool need_dv = ws != nullptr || dvalues != nullptr;
  const Lanes ln(group);
  const int64_t items = n_cols * spans;
  const int64_t step = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t it = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5); it < items; it += step) {
    const int64_t j = it / spans;
    const int64_t span = it - j * spans;
    const int64_t t0 = span * span_len;
    const int64_t t1 = t0 + span_len < tiles ? t0 + span_len : tiles;
    const int64_t beg = static_cast<int64_t>(t_ptr[j]);
    const int64_t end = static_cast<int64_t>(t_ptr[j + 1]);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t s = t * group + ln.bb;
      const bool active = s < nslots;
      const P xv = need_dv && active ? x_p[j * nslots + s] : zero_pack<T, V>();
      A dx[V] = {};
      // Uniform across the warp (beg, end are the column's): every lane reaches the shuffles.
      for (int64_t k0 = beg; k0 < end; k0 += kUnroll * ln.nks) {
        bool valid[kUnroll];
        A w[kUnroll];
        P dy[kUnroll];  // zero for an invalid nonzero or an inactive slot
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t kk = k0 + u * ln.nks + ln.ks;
          valid[u] = kk < end;
          w[u] = A(0);
          dy[u] = zero_pack<T, V>();
          if (valid[u] && active) dy[u] = dy_p[static_cast<int64_t>(t_row[kk]) * nslots + s];
          if (valid[u] && need_dx) w[u] = to_acc(values[static_cast<int64_t>(t_perm[kk])]);
        }
        if (need_dx) {
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
#pragma unroll
            for (int e = 0; e < V; ++e) dx[e] += w[u] * to_acc(dy[u].v[e]);
          }
        }
        if (need_dv) {
          A d[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            d[u] = A(0);
#pragma unroll
            for (int e = 0; e < V; ++e) d[u] += to_acc(dy[u].v[e]) * to_acc(xv.v[e]);
          }
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) d[u] = warp_allreduce(d[u], group);  // over the slice's tile
          if (ln.bb == 0) {
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
              if (!valid[u]) continue;
              const int64_t kk = k0 + u * ln.nks + ln.ks;
              if (ws != nullptr) {
                A* slot = ws + span * nnz + kk;
                *slot = t == t0 ? d[u] : *slot + d[u];
              } else {
                dvalues[static_cast<int64_t>(t_perm[kk])] = from_acc<T>(d[u]);
              }
            }
          }
        }
      }
      if (need_dx) {
        sum_slices<A, V>(dx, group);
        if (active && ln.ks == 0) {
          P out;
#pragma unroll
          for (int e = 0; e < V; ++e) out.v[e] = from_acc<T>(dx[e]);
          reinterpret_cast<P*>(dxt)[j * nslots + s] = out;
        }
      }
    }
  }
}

// dvalues[t_perm[k]] = sum_{span < spans} ws[span, k], spans in order (deterministic).
template <typename T, typename I>
__global__ void dvalues_sum_kernel(const acc_t<T>* __restrict__ ws, int64_t nnz, int64_t spans,
                                   const I* __restrict__ t_perm, T* __restrict__ dvalues) {
  using A = acc_t<T>;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < nnz; k += step) {
    A sum = ws[k];
    for (int64_t sp = 1; sp < spans; ++sp) sum += ws[sp * nnz + k];
    dvalues[static_cast<int64_t>(t_perm[k])] = from_acc<T>(sum);
  }
}

// ---- launch configuration -------------------------------------------------------------------

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

// Elements per access: one 16-byte access when B allows it and every dense pointer (nullptr:
// absent) is 16-byte aligned, else 1.
int access_width(DType dtype, int64_t B, const void* a, const void* b, const void* c) {
  const int v = 16 / dtype_size(dtype);
  const bool ok = B % v == 0 && aligned16(a) && aligned16(b) && aligned16(c);
  return ok ? v : 1;
}

// The batch cut into tiles of `group` slots of `vec` elements (B > 0).
struct BatchTiles {
  int vec;
  int64_t nslots;  // B / vec
  int group;       // lanes per tile: a power of two, the smallest >= nslots, at most 32
  int64_t tiles;   // ceil(nslots / group)
};

BatchTiles batch_tiles(int64_t B, int vec) {
  BatchTiles bt{vec, B / vec, 1, 0};
  while (bt.group < 32 && bt.group < bt.nslots) bt.group <<= 1;
  bt.tiles = (bt.nslots + bt.group - 1) / bt.group;
  return bt;
}

// Backward: each column's tiles are split into `spans` runs of span_len tiles, enough for about
// kBwdTargetWarps (column, span) items; every span is non-empty. The plan depends only on the
// shapes and access width, not on the device, so dvalues' summation order is reproducible.
struct BwdPlan {
  BatchTiles bt;
  int64_t spans, span_len;
  bool direct;  // one tile per column: the dots are complete, no workspace
};

BwdPlan bwd_plan(DType dtype, const void* dyt, const void* xt, const void* dxt, int64_t M, int64_t B) {
  BwdPlan p{batch_tiles(B, access_width(dtype, B, dyt, xt, dxt)), 1, 0, false};
  const int64_t want = (kBwdTargetWarps + M - 1) / std::max<int64_t>(M, 1);
  p.spans = std::max<int64_t>(1, std::min<int64_t>(want, p.bt.tiles));
  p.span_len = (p.bt.tiles + p.spans - 1) / p.spans;
  p.spans = (p.bt.tiles + p.span_len - 1) / p.span_len;  // drop empty spans
  p.direct = p.bt.tiles == 1;
  return p;
}

unsigned grid_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>(std::min<int64_t>((items + per_block - 1) / per_block, kMaxBlocks));
}

// Calls f(T{}, I{}) with T the storage type of `dtype` and I the index type.
template <typename F>
cudaError_t dispatch_types(DType dtype, SparseIndex index, F&& f) {
  const auto with_index = [&](auto tag) -> cudaError_t {
    switch (index) {
      case SparseIndex::i32: return f(tag, int32_t{});
      case SparseIndex::i64: return f(tag, int64_t{});
    }
    return cudaErrorInvalidValue;
  };
  return dispatch_dtype(dtype, with_index);
}

// Calls f(std::integral_constant<int, V>{}) for the access width vec (16 / sizeof(T) or 1).
template <typename T, typename F>
cudaError_t dispatch_width(int vec, F&& f) {
  constexpr int kVec = static_cast<int>(16 / sizeof(T));
  if (vec == kVec) return f(std::integral_constant<int, kVec>{});
  return f(std::integral_constant<int, 1>{});
}

}  // namespace

// ---- launchers (see sparse_linear.h for the contracts) ----------------------------------------------

cudaError_t launch_sparse_linear_fwd(DType dtype, SparseIndex index, const void* xt, int64_t B, const void* values,
                                     const void* crow, const void* col, int64_t N, const void* bias, void* yt,
                                     cudaStream_t stream) {
  if (N < 0 || B < 0) return cudaErrorInvalidValue;
  if (N == 0 || B == 0) return cudaSuccess;  // yt is empty
  const BatchTiles bt = batch_tiles(B, access_width(dtype, B, xt, yt, nullptr));
  return dispatch_types(dtype, index, [&](auto t_tag, auto i_tag) -> cudaError_t {
    using T = decltype(t_tag);
    using I = decltype(i_tag);
    return dispatch_width<T>(bt.vec, [&](auto v_tag) -> cudaError_t {
      constexpr int V = decltype(v_tag)::value;
      spmm_fwd_kernel<T, I, V><<<grid_for(N * bt.tiles, kWarps), kThreads, 0, stream>>>(
          static_cast<const T*>(xt), static_cast<const T*>(values), static_cast<const I*>(crow),
          static_cast<const I*>(col), static_cast<const T*>(bias), static_cast<T*>(yt), N, bt.nslots, bt.group,
          bt.tiles);
      return cudaGetLastError();
    });
  });
}

int64_t sparse_linear_bwd_workspace(DType dtype, const void* dyt, const void* xt, const void* dxt, int64_t M, int64_t B,
                                    int64_t nnz, bool need_dvalues) {
  if (!need_dvalues || M <= 0 || B <= 0 || nnz <= 0) return 0;
  const BwdPlan p = bwd_plan(dtype, dyt, xt, dxt, M, B);
  return p.direct ? 0 : p.spans * nnz;
}

cudaError_t launch_sparse_linear_bwd(DType dtype, SparseIndex index, const void* dyt, const void* xt, int64_t M,
                                     int64_t B, const void* values, int64_t nnz, const void* t_ptr, const void* t_row,
                                     const void* t_perm, void* dxt, void* dvalues, void* workspace,
                                     cudaStream_t stream) {
  if (M < 0 || B < 0 || nnz < 0) return cudaErrorInvalidValue;
  const int elem = dtype_size(dtype);
  if (M == 0 || B == 0 || nnz == 0) {
    // No nonzero: dxt = 0. Empty batch: dvalues = 0 (empty sums); dxt is empty.
    cudaError_t err = cudaSuccess;
    if (dxt != nullptr && M > 0 && B > 0)
      err = cudaMemsetAsync(dxt, 0, static_cast<size_t>(M) * static_cast<size_t>(B) * elem, stream);
    if (err == cudaSuccess && dvalues != nullptr && nnz > 0)
      err = cudaMemsetAsync(dvalues, 0, static_cast<size_t>(nnz) * elem, stream);
    return err;
  }
  if (dxt == nullptr && dvalues == nullptr) return cudaSuccess;
  const BwdPlan p = bwd_plan(dtype, dyt, xt, dxt, M, B);
  const bool use_ws = dvalues != nullptr && !p.direct;
  if (use_ws && workspace == nullptr) return cudaErrorInvalidValue;
  return dispatch_types(dtype, index, [&](auto t_tag, auto i_tag) -> cudaError_t {
    using T = decltype(t_tag);
    using I = decltype(i_tag);
    using A = acc_t<T>;
    A* ws = use_ws ? static_cast<A*>(workspace) : nullptr;
    cudaError_t err = dispatch_width<T>(p.bt.vec, [&](auto v_tag) -> cudaError_t {
      constexpr int V = decltype(v_tag)::value;
      spmm_bwd_kernel<T, I, V><<<grid_for(M * p.spans, kWarps), kThreads, 0, stream>>>(
          static_cast<const T*>(dyt), static_cast<const T*>(xt), static_cast<const T*>(values),
          static_cast<const I*>(t_ptr), static_cast<const I*>(t_row), static_cast<const I*>(t_perm), M, nnz,
          p.bt.nslots, p.bt.group, p.bt.tiles, p.spans, p.span_len, static_cast<T*>(dxt), ws,
          use_ws ? nullptr : static_cast<T*>(dvalues));
      return cudaGetLastError();
    });
    if (err != cudaSuccess || !use_ws) return err;
    dvalues_sum_kernel<T, I><<<grid_for(nnz, kThreads), kThreads, 0, stream>>>(
        ws, nnz, p.spans, static_cast<const I*>(t_perm), static_cast<T*>(dvalues));
    return cudaGetLastError();
  });
}

}  // namespace ffops::gpu
