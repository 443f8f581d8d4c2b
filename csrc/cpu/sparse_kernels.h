// The CPU kernels of the sparse family (csrc/cpu/sparse_kernels.cpp) and their scheduling, shared by
// the sparse linear layer (csrc/cpu/sparse_linear.cpp) and the direct sparse convolution
// (csrc/cpu/sparse_conv.cpp). Both see W in CSR and activations feature-major: every nonzero is one
// vector operation over a stretch of contiguous "batch" positions.
//   spmm_rows (forward, CSR order):    yt[i, b] = bias[i] + sum_k values[k] * x_k[b]
//   sddmm_cols (backward, CSC order):  dxt[j, b] = sum_k w_k * dy_k[b];  dots_k = sum_b dy_k[b] xt[j, b]
// where x_k is the row of xt that nonzero k reads and dy_k the row of dyt. For the linear layer they
// are xt[col[k]] and dyt[row[k]]; a caller can give each nonzero its own row offset instead (src /
// dsrc), which is how the convolution reads shifted windows of one padded input row without im2col.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace ffops::cpu::sparse {

// The batch is handled in chunks of 64 bytes (16 float32 / 8 float64 columns, one cache line): the
// callers give the last batch % kChunk columns as zero-padded [rows, kChunk] copies (the `tail`
// fields) or round their flat lengths to whole chunks (the convolution). Each ISA's kernels cut the
// chunks into vectors of their own width (csrc/cpu/sparse_kernels_impl.h).
template <typename T>
inline constexpr int kChunk = 64 / sizeof(T);

// Panels span at most kPanelWide chunks (64 float32 / 32 float64 columns), fewer when the slab that one
// panel gathers from (every row of xt in the forward, of dyt in the backward, re-read by every output
// row or column) would exceed the share l2_share of the L2 the CPU reports (l2_cache_bytes()):
// panel_chunks(slab rows, share). The forward takes half the L2; the backward all of it: a narrower
// backward panel walks the pattern and the permutation once more, which cost more than the L2 misses of
// a full 1 MiB slab (Zen 4, 4096 x 4096 at 0.8: 14.5 ms at 4 chunks, 16.4 ms at 2). An ISA's kernels may
// use narrower panels still (as many vectors as their registers hold).
inline constexpr int kPanelWide = 4;

int panel_chunks(int64_t slab_rows, double l2_share);

template <typename T, typename I>
struct FwdArgs {
  const T* xt;
  const T* values;
  const I* crow;
  const I* col;
  const int64_t* src;  // or nullptr: nonzero k reads xt + src[k] (else xt + col[k] * batch)
  const T* bias;       // or nullptr
  T* yt;               // [N, batch]
  int64_t batch;
  int panel;         // chunks per panel (at most)
  bool tail;         // batch % kChunk != 0 (only without src):
  const T* xt_tail;  // [M, kChunk] zero-padded copy of the last batch % kChunk columns
  T* yt_tail;        // [N, kChunk] their outputs
};

// The thread's nonzeros k = ptr[j0] .. ptr[j1] are handled in CSC order throughout: a first pass
// gathers vt[k] = values[perm[k]], the panels stream vt and sum their dots into dots[k], and a last
// pass scatters dvalues[perm[k]] = dots[k]. Measured on Zen 4, the permuted accesses cost less in
// these tight prefetching loops than inside the FMA loop, where they compete with the dyt slab.
template <typename T, typename I>
struct BwdArgs {
  const T* dyt;
  const T* xt;  // [M, batch]
  const T* values;
  const I* ptr;
  const I* row;
  const I* perm;
  const int64_t* dsrc;  // or nullptr: nonzero k (CSC order) reads dyt + dsrc[k] (else dyt + row[k] * batch)
  T* dxt;               // [M, batch] or nullptr (not needed)
  T* vt;                // [nnz] values in CSC order (when dxt is needed)
  T* dots;              // [nnz] dvalues in CSC order (when dvalues is needed)
  T* dvalues;           // or nullptr (not needed)
  int64_t batch;
  int panel;          // chunks per panel (at most)
  bool tail;          // batch % kChunk != 0 (only without dsrc):
  const T* dyt_tail;  // [N, kChunk] / [M, kChunk] zero-padded copies of the last batch % kChunk
  const T* xt_tail;   // columns
  T* dxt_tail;        // [M, kChunk]
};

// The thread's share: rows r0..r1 (forward), columns j0..j1 (backward), for float / double values and
// int32 / int64 indices; each runs the kernels compiled for vector_isa() (csrc/cpu/vector_isa.h).
#define FFOPS_SPARSE_KERNEL_DECLS(T, I)                           \
  void spmm_rows(const FwdArgs<T, I>& a, int64_t r0, int64_t r1); \
  void sddmm_cols(const BwdArgs<T, I>& a, int64_t j0, int64_t j1);
FFOPS_SPARSE_KERNEL_DECLS(float, int32_t)
FFOPS_SPARSE_KERNEL_DECLS(float, int64_t)
FFOPS_SPARSE_KERNEL_DECLS(double, int32_t)
FFOPS_SPARSE_KERNEL_DECLS(double, int64_t)
#undef FFOPS_SPARSE_KERNEL_DECLS

// Below this many multiply-adds a second thread costs more than it saves.
inline constexpr int64_t kMinParallelWork = 1 << 16;

// Boundaries [parts + 1] of `parts` contiguous ranges of the n rows of a compressed pattern with
// about equal cost, counting a row (column) as its nonzeros plus one.
template <typename I>
std::vector<int64_t> split_by_nnz(const I* ptr, int64_t n, int parts) {
  std::vector<int64_t> bounds(parts + 1, n);
  bounds[0] = 0;
  const int64_t total = static_cast<int64_t>(ptr[n]) + n;
  for (int t = 1; t < parts; ++t) {
    const int64_t target = total * t / parts;
    int64_t lo = bounds[t - 1], hi = n;  // first r with cost(r) >= target
    while (lo < hi) {
      const int64_t mid = (lo + hi) / 2;
      if (static_cast<int64_t>(ptr[mid]) + mid < target) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    bounds[t] = lo;
  }
  return bounds;
}

// Runs body(begin, end) over ranges of the n rows of `ptr` balanced by nonzeros, one per thread.
template <typename I, typename F>
void parallel_over_nnz(const I* ptr, int64_t n, int64_t batch, const F& body) {
  const int64_t work = (static_cast<int64_t>(ptr[n]) + n) * batch;
  const int parts = work < kMinParallelWork ? 1 : std::max(1, at::get_num_threads());
  if (parts == 1) {
    body(0, n);
    return;
  }
  const std::vector<int64_t> bounds = split_by_nnz(ptr, n, parts);
  at::parallel_for(0, parts, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) body(bounds[t], bounds[t + 1]);
  });
}

}  // namespace ffops::cpu::sparse
