// The sparse linear layer on CPU: W [N, M] in CSR, activations feature-major (xt [M, B]), so every
// nonzero is a vector operation over a slice of the batch (sparse_linear_fwd / sparse_linear_bwd).
// Schemas and math: csrc/ops.cpp; argument checks shared with CUDA: csrc/sparse_linear.h; CUDA:
// csrc/cuda/sparse_linear{.cu,_cuda.cpp}; autograd: a Python autograd.Function
// (ffops/ops/_sparse_library.py); its transposes: transpose_2d (csrc/cpu/transpose.cpp).
//   forward (CSR order):  each output row yt[i, panel] stays in registers while the row's nonzeros
//                         stream past: acc += w * xt[col, panel].
//   backward (CSC order): one FMA pass; column j keeps xt[j, panel] and its dx accumulator in
//                         registers, and each nonzero's dyt[row, panel] is loaded once for both
//                         dx += w * dy and the dot <dy, x_j> that gives dvalues. The permutation
//                         between CSC and the CSR-ordered values / dvalues is applied in a gather
//                         pass before it and a scatter pass after it.
// The batch is cut into panels of a few vectors so the slab of xt (dyt) that the rows (columns)
// gather from stays in L2; the last B % kLanes columns go through zero-padded copies. Threads own
// contiguous row (column) ranges of equal nonzero count: no atomics, no barriers.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/alloc.h"
#include "cpu/row_math.h"
#include "cpu/sparse_linear_math.h"
#include "sparse_linear.h"

namespace ffops::cpu {
namespace {

using sparse::broadcast;
using sparse::kLanes;
using sparse::load;
using sparse::store;
using sparse::Vec;

// A batch panel is kPanelWide vectors (64 float32 / 32 float64 columns). The forward narrows it to
// kPanelNarrow when the slab of xt that one panel gathers from would exceed kSlabBytes (that slab
// is re-read by every row, so it should stay in the 1 MiB L2). The backward always uses wide panels:
// its cost per nonzero and panel includes a share of the dot reduction, which narrower panels
// would repeat more often than the L2 misses they save.
constexpr int kPanelWide = 4;
constexpr int kPanelNarrow = 2;
constexpr int64_t kSlabBytes = int64_t(512) << 10;
// How far ahead (in nonzeros) the permuted gather / scatter passes prefetch.
constexpr int64_t kPermAhead = 32;
// Below this many multiply-adds a second thread costs more than it saves.
constexpr int64_t kMinParallelWork = 1 << 16;

template <typename T>
int forward_panel_vectors(int64_t slab_rows) {
  return slab_rows * kPanelWide * kLanes<T> * int64_t(sizeof(T)) <= kSlabBytes ? kPanelWide : kPanelNarrow;
}

// ---- forward ----------------------------------------------------------------------------------

template <typename T, typename I>
struct FwdArgs {
  const T* xt;
  const T* values;
  const I* crow;
  const I* col;
  const T* bias;  // or nullptr
  T* yt;
  int64_t batch;
  int panel;         // vectors per panel
  bool tail;         // batch % kLanes != 0:
  const T* xt_tail;  // [M, kLanes] zero-padded copy of the last batch % kLanes columns
  T* yt_tail;        // [N, kLanes] their outputs
};

// yt[i, 0 : V * L] for rows r0..r1 of one panel (xt, yt offset to the panel; ld their row stride).
// Two accumulator sets (even and odd nonzeros) give 2V independent FMA chains.
template <typename T, typename I, int V>
FFOPS_SPARSE_AI void spmm_panel(const FwdArgs<T, I>& a, const T* xt, T* yt, int64_t ld, int64_t r0, int64_t r1) {
  constexpr int L = kLanes<T>;
  for (int64_t i = r0; i < r1; ++i) {
    Vec<T> acc[2][V];
    const Vec<T> b = broadcast<T>(a.bias ? a.bias[i] : T(0));
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      acc[0][v] = b;
      acc[1][v] = Vec<T>{};
    }
    int64_t k = a.crow[i];
    const int64_t k1 = a.crow[i + 1];
    for (; k + 1 < k1; k += 2) {
#pragma GCC unroll 2
      for (int u = 0; u < 2; ++u) {
        const T* x = xt + static_cast<int64_t>(a.col[k + u]) * ld;
        const T w = a.values[k + u];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[u][v] += w * load(x + v * L);
      }
    }
    if (k < k1) {
      const T* x = xt + static_cast<int64_t>(a.col[k]) * ld;
      const T w = a.values[k];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[0][v] += w * load(x + v * L);
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) store(yt + i * ld + v * L, acc[0][v] + acc[1][v]);
  }
}

// spmm_panel for a runtime width nv <= V.
template <typename T, typename I, int V>
FFOPS_SPARSE_AI void spmm_panel_n(const FwdArgs<T, I>& a, int nv, const T* xt, T* yt, int64_t ld, int64_t r0,
                                  int64_t r1) {
  if constexpr (V > 0) {
    if (nv == V) {
      spmm_panel<T, I, V>(a, xt, yt, ld, r0, r1);
    } else {
      spmm_panel_n<T, I, V - 1>(a, nv, xt, yt, ld, r0, r1);
    }
  }
}

template <typename T, typename I>
FFOPS_SPARSE_AI void spmm_rows_impl(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) {
  constexpr int L = kLanes<T>;
  const int64_t vec_end = a.batch / L * L;
  for (int64_t b = 0; b < vec_end; b += a.panel * L) {
    const int nv = static_cast<int>(std::min<int64_t>(a.panel, (vec_end - b) / L));
    spmm_panel_n<T, I, kPanelWide>(a, nv, a.xt + b, a.yt + b, a.batch, r0, r1);
  }
  if (a.tail) spmm_panel<T, I, 1>(a, a.xt_tail, a.yt_tail, L, r0, r1);
}

// ---- backward ---------------------------------------------------------------------------------

// The thread's nonzeros k = ptr[j0] .. ptr[j1] are handled in CSC order throughout: a first pass
// gathers vt[k] = values[perm[k]], the panels stream vt and sum their dots into dots[k], and a last
// pass scatters dvalues[perm[k]] = dots[k]. Measured on Zen 4, the permuted accesses cost less in
// these tight prefetching loops than inside the FMA loop, where they compete with the dyt slab.
template <typename T, typename I>
struct BwdArgs {
  const T* dyt;
  const T* xt;
  const T* values;
  const I* ptr;
  const I* row;
  const I* perm;
  T* dxt;      // or nullptr (not needed)
  T* vt;       // [nnz] values in CSC order (when dxt is needed)
  T* dots;     // [nnz] dvalues in CSC order (when dvalues is needed)
  T* dvalues;  // or nullptr (not needed)
  int64_t batch;
  bool tail;          // batch % kLanes != 0:
  const T* dyt_tail;  // [N, kLanes] / [M, kLanes] zero-padded copies of the last batch % kLanes
  const T* xt_tail;   // columns
  T* dxt_tail;        // [M, kLanes]
};

// One nonzero k (row r, CSC value w) of column j: dx += w * dyt[r], p = <dyt[r], x_j> lane-wise.
template <typename T, typename I, int V, bool kDx, bool kDv>
FFOPS_SPARSE_AI void sddmm_nonzero(const BwdArgs<T, I>& a, const T* dyt, int64_t ld, int64_t k, const Vec<T>* x,
                                   Vec<T>* dx, Vec<T>& p) {
  constexpr int L = kLanes<T>;
  const T* dy = dyt + static_cast<int64_t>(a.row[k]) * ld;
  Vec<T> d[V];
#pragma GCC unroll 8
  for (int v = 0; v < V; ++v) d[v] = load(dy + v * L);
  if constexpr (kDx) {
    const T w = a.vt[k];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) dx[v] += w * d[v];
  }
  if constexpr (kDv) {
    Vec<T> s = x[0] * d[0];
#pragma GCC unroll 8
    for (int v = 1; v < V; ++v) s += x[v] * d[v];
    p = s;
  }
}

// Columns j0..j1 of one panel (dyt, xt, dxt offset to the panel; ld their row stride). The dots of
// the first panel are stored, later panels add theirs.
template <typename T, typename I, int V, bool kDx, bool kDv>
FFOPS_SPARSE_AI void sddmm_panel(const BwdArgs<T, I>& a, const T* dyt, const T* xt, T* dxt, int64_t ld, bool first,
                                 int64_t j0, int64_t j1) {
  constexpr int L = kLanes<T>;
  for (int64_t j = j0; j < j1; ++j) {
    Vec<T> x[V], dx[2][V];  // dx: two accumulator sets (even and odd nonzeros)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) {
      if constexpr (kDv) x[v] = load(xt + j * ld + v * L);
      dx[0][v] = dx[1][v] = Vec<T>{};
    }
    const int64_t k1 = a.ptr[j + 1];
    // Nonzeros in groups of L: their L lane-wise dot vectors are summed together by transpose_sum.
    for (int64_t k0 = a.ptr[j]; k0 < k1; k0 += L) {
      Vec<T> p[L];
      const int n = static_cast<int>(std::min<int64_t>(L, k1 - k0));
      if (n == L) {
#pragma GCC unroll 16
        for (int l = 0; l < L; ++l) sddmm_nonzero<T, I, V, kDx, kDv>(a, dyt, ld, k0 + l, x, dx[l & 1], p[l]);
      } else {
        for (int l = 0; l < n; ++l) sddmm_nonzero<T, I, V, kDx, kDv>(a, dyt, ld, k0 + l, x, dx[0], p[l]);
        for (int l = n; l < L; ++l) p[l] = Vec<T>{};
      }
      if constexpr (kDv) {
        T d[L];
        store(d, sparse::transpose_sum<T>(p));
        T* out = a.dots + k0;
        if (first) {
          for (int l = 0; l < n; ++l) out[l] = d[l];
        } else {
          for (int l = 0; l < n; ++l) out[l] += d[l];
        }
      }
    }
    if constexpr (kDx) {
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) store(dxt + j * ld + v * L, dx[0][v] + dx[1][v]);
    }
  }
}

// sddmm_panel for a runtime width nv <= V.
template <typename T, typename I, int V, bool kDx, bool kDv>
FFOPS_SPARSE_AI void sddmm_panel_n(const BwdArgs<T, I>& a, int nv, const T* dyt, const T* xt, T* dxt, int64_t ld,
                                   bool first, int64_t j0, int64_t j1) {
  if constexpr (V > 0) {
    if (nv == V) {
      sddmm_panel<T, I, V, kDx, kDv>(a, dyt, xt, dxt, ld, first, j0, j1);
    } else {
      sddmm_panel_n<T, I, V - 1, kDx, kDv>(a, nv, dyt, xt, dxt, ld, first, j0, j1);
    }
  }
}

template <typename T, typename I, bool kDx, bool kDv>
FFOPS_SPARSE_AI void sddmm_cols_impl(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {
  constexpr int L = kLanes<T>;
  const int64_t kb = a.ptr[j0], ke = a.ptr[j1];
  if constexpr (kDx) {
    for (int64_t k = kb; k < ke; ++k) {
      __builtin_prefetch(a.values + a.perm[std::min(k + kPermAhead, ke - 1)]);
      a.vt[k] = a.values[a.perm[k]];
    }
  }
  const int64_t vec_end = a.batch / L * L;
  for (int64_t b = 0; b < vec_end; b += kPanelWide * L) {
    const int nv = static_cast<int>(std::min<int64_t>(kPanelWide, (vec_end - b) / L));
    sddmm_panel_n<T, I, kPanelWide, kDx, kDv>(a, nv, a.dyt + b, a.xt + b, kDx ? a.dxt + b : nullptr, a.batch, b == 0,
                                              j0, j1);
  }
  if (a.tail) sddmm_panel<T, I, 1, kDx, kDv>(a, a.dyt_tail, a.xt_tail, a.dxt_tail, L, vec_end == 0, j0, j1);
  if constexpr (kDv) {
    for (int64_t k = kb; k < ke; ++k) {
      __builtin_prefetch(a.dvalues + a.perm[std::min(k + kPermAhead, ke - 1)], 1);
      a.dvalues[a.perm[k]] = a.dots[k];
    }
  }
}

// One multiversioned (AVX-512 / AVX2 / baseline) entry per value and index type: the thread's
// share of rows (forward) or columns (backward).
#define FFOPS_SPARSE_KERNELS(T, I)                                                                                 \
  FFOPS_MULTIVERSION void spmm_rows(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) { spmm_rows_impl(a, r0, r1); } \
  FFOPS_MULTIVERSION void sddmm_cols(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {                             \
    if (a.dxt && a.dvalues) {                                                                                      \
      sddmm_cols_impl<T, I, true, true>(a, j0, j1);                                                                \
    } else if (a.dxt) {                                                                                            \
      sddmm_cols_impl<T, I, true, false>(a, j0, j1);                                                               \
    } else {                                                                                                       \
      sddmm_cols_impl<T, I, false, true>(a, j0, j1);                                                               \
    }                                                                                                              \
  }

FFOPS_SPARSE_KERNELS(float, int32_t)
FFOPS_SPARSE_KERNELS(float, int64_t)
FFOPS_SPARSE_KERNELS(double, int32_t)
FFOPS_SPARSE_KERNELS(double, int64_t)

#undef FFOPS_SPARSE_KERNELS

// ---- scheduling -------------------------------------------------------------------------------

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

// A [rows, kLanes] zero-padded copy of the last `batch % kLanes` columns of m [rows, batch].
at::Tensor padded_tail(const at::Tensor& m, int64_t lanes) {
  const int64_t tail = m.size(1) % lanes;
  at::Tensor out = at::zeros({m.size(0), lanes}, m.options());
  out.narrow(1, 0, tail).copy_(m.narrow(1, m.size(1) - tail, tail));
  return out;
}

// ---- ops --------------------------------------------------------------------------------------

at::Tensor sparse_linear_fwd(const at::Tensor& xt, const at::Tensor& values, const at::Tensor& crow,
                             const at::Tensor& col, const std::optional<at::Tensor>& bias) {
  check_sparse_linear_fwd_args(xt, values, crow, col, bias);
  const auto dtype = xt.scalar_type();
  const int64_t n = crow.numel() - 1, batch = xt.size(1);

  at::Tensor yt = empty_large({n, batch}, xt.options());
  if (n == 0 || batch == 0) return yt;
  AT_DISPATCH_FLOATING_TYPES(dtype, "ffops_sparse_linear_fwd", [&] {
    constexpr int L = kLanes<scalar_t>;
    at::Tensor xt_tail, yt_tail;
    if (batch % L) {
      xt_tail = padded_tail(xt, L);
      yt_tail = at::empty({n, L}, xt.options());
    }
    auto run = [&](auto index) {
      using I = decltype(index);
      const FwdArgs<scalar_t, I> a{xt.const_data_ptr<scalar_t>(),
                                   values.const_data_ptr<scalar_t>(),
                                   crow.const_data_ptr<I>(),
                                   col.const_data_ptr<I>(),
                                   bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
                                   yt.mutable_data_ptr<scalar_t>(),
                                   batch,
                                   forward_panel_vectors<scalar_t>(xt.size(0)),
                                   xt_tail.defined(),
                                   xt_tail.defined() ? xt_tail.const_data_ptr<scalar_t>() : nullptr,
                                   yt_tail.defined() ? yt_tail.mutable_data_ptr<scalar_t>() : nullptr};
      parallel_over_nnz(a.crow, n, batch, [&](int64_t r0, int64_t r1) { spmm_rows(a, r0, r1); });
    };
    if (crow.scalar_type() == at::kInt) {
      run(int32_t{});
    } else {
      run(int64_t{});
    }
    if (yt_tail.defined()) {
      const int64_t tail = batch % L;
      yt.narrow(1, batch - tail, tail).copy_(yt_tail.narrow(1, 0, tail));
    }
  });
  return yt;
}

std::tuple<at::Tensor, at::Tensor> sparse_linear_bwd(const at::Tensor& dyt, const at::Tensor& xt,
                                                     const at::Tensor& values, const at::Tensor& t_ptr,
                                                     const at::Tensor& t_row, const at::Tensor& t_perm, bool need_dx,
                                                     bool need_dvalues) {
  check_sparse_linear_bwd_args(dyt, xt, values, t_ptr, t_row, t_perm);
  const auto dtype = values.scalar_type();
  const int64_t nnz = values.size(0), m = xt.size(0), batch = xt.size(1);

  at::Tensor dxt = need_dx ? empty_large({m, batch}, xt.options()) : at::empty({0}, xt.options());
  at::Tensor dvalues = need_dvalues ? empty_large({nnz}, values.options()) : at::empty({0}, values.options());
  if (batch == 0 || nnz == 0 || (!need_dx && !need_dvalues)) {
    // Empty sums (dvalues over no samples, dx over no nonzeros) or nothing to compute.
    dxt.zero_();
    dvalues.zero_();
    return {dxt, dvalues};
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, "ffops_sparse_linear_bwd", [&] {
    constexpr int L = kLanes<scalar_t>;
    at::Tensor dyt_tail, xt_tail, dxt_tail, vt, dots;
    if (batch % L) {
      dyt_tail = padded_tail(dyt, L);
      xt_tail = padded_tail(xt, L);
      if (need_dx) dxt_tail = at::empty({m, L}, xt.options());
    }
    if (need_dx) vt = empty_large({nnz}, values.options());
    if (need_dvalues) dots = empty_large({nnz}, values.options());
    auto run = [&](auto index) {
      using I = decltype(index);
      auto ptr = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
      const BwdArgs<scalar_t, I> a{dyt.const_data_ptr<scalar_t>(),
                                   xt.const_data_ptr<scalar_t>(),
                                   values.const_data_ptr<scalar_t>(),
                                   t_ptr.const_data_ptr<I>(),
                                   t_row.const_data_ptr<I>(),
                                   t_perm.const_data_ptr<I>(),
                                   need_dx ? dxt.mutable_data_ptr<scalar_t>() : nullptr,
                                   ptr(vt),
                                   ptr(dots),
                                   need_dvalues ? dvalues.mutable_data_ptr<scalar_t>() : nullptr,
                                   batch,
                                   xt_tail.defined(),
                                   ptr(dyt_tail),
                                   ptr(xt_tail),
                                   ptr(dxt_tail)};
      parallel_over_nnz(a.ptr, m, batch, [&](int64_t j0, int64_t j1) { sddmm_cols(a, j0, j1); });
    };
    if (t_ptr.scalar_type() == at::kInt) {
      run(int32_t{});
    } else {
      run(int64_t{});
    }
    if (dxt_tail.defined()) {
      const int64_t tail = batch % L;
      dxt.narrow(1, batch - tail, tail).copy_(dxt_tail.narrow(1, 0, tail));
    }
  });
  return {dxt, dvalues};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("sparse_linear_fwd", &ffops::cpu::sparse_linear_fwd);
  m.impl("sparse_linear_bwd", &ffops::cpu::sparse_linear_bwd);
}
