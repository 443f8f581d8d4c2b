// The CPU kernels of the sparse family: SpMM (forward) and the fused transposed-SpMM + SDDMM
// (backward) over a CSR weight, on feature-major activations (API and argument structs:
// csrc/cpu/sparse_kernels.h; ops: csrc/cpu/sparse_linear.cpp, csrc/cpu/sparse_conv.cpp).
//   forward (CSR order):  each output row yt[i, panel] stays in registers while the row's nonzeros
//                         stream past: acc += w * x_k[panel].
//   backward (CSC order): one FMA pass; column j keeps xt[j, panel] and its dx accumulator in
//                         registers, and each nonzero's dy_k[panel] is loaded once for both
//                         dx += w * dy and the dot <dy, x_j> that gives dvalues. The permutation
//                         between CSC and the CSR-ordered values / dvalues is applied in a gather
//                         pass before it and a scatter pass after it.
// The batch is cut into panels of a few vectors so the slab of xt (dyt) that the rows (columns)
// gather from stays in L2; the last B % kLanes columns go through zero-padded copies. Threads own
// contiguous row (column) ranges of equal nonzero count: no atomics, no barriers.
#include "cpu/sparse_kernels.h"

#include <algorithm>
#include <cstdint>

#include "cpu/row_math.h"
#include "cpu/sparse_linear_math.h"

namespace ffops::cpu::sparse {
namespace {

// How far ahead (in nonzeros) the permuted gather / scatter passes prefetch.
constexpr int64_t kPermAhead = 32;

// ---- forward ----------------------------------------------------------------------------------

// The row that nonzero k reads, in xt offset to the panel (ld: its row stride).
template <bool kOff, typename T, typename I>
FFOPS_SPARSE_AI const T* x_row(const FwdArgs<T, I>& a, const T* xt, int64_t ld, int64_t k) {
  if constexpr (kOff) {
    return xt + a.src[k];
  } else {
    return xt + static_cast<int64_t>(a.col[k]) * ld;
  }
}

// yt[i, 0 : V * L] for rows r0..r1 of one panel (xt, yt offset to the panel; ld their row stride).
// Two accumulator sets (even and odd nonzeros) give 2V independent FMA chains.
template <typename T, typename I, int V, bool kOff>
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
        const T* x = x_row<kOff>(a, xt, ld, k + u);
        const T w = a.values[k + u];
#pragma GCC unroll 8
        for (int v = 0; v < V; ++v) acc[u][v] += w * load(x + v * L);
      }
    }
    if (k < k1) {
      const T* x = x_row<kOff>(a, xt, ld, k);
      const T w = a.values[k];
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[0][v] += w * load(x + v * L);
    }
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) store(yt + i * ld + v * L, acc[0][v] + acc[1][v]);
  }
}

// spmm_panel for a runtime width nv <= V.
template <typename T, typename I, int V, bool kOff>
FFOPS_SPARSE_AI void spmm_panel_n(const FwdArgs<T, I>& a, int nv, const T* xt, T* yt, int64_t ld, int64_t r0,
                                  int64_t r1) {
  if constexpr (V > 0) {
    if (nv == V) {
      spmm_panel<T, I, V, kOff>(a, xt, yt, ld, r0, r1);
    } else {
      spmm_panel_n<T, I, V - 1, kOff>(a, nv, xt, yt, ld, r0, r1);
    }
  }
}

template <typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void spmm_rows_impl(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) {
  constexpr int L = kLanes<T>;
  const int64_t vec_end = a.batch / L * L;
  for (int64_t b = 0; b < vec_end; b += a.panel * L) {
    const int nv = static_cast<int>(std::min<int64_t>(a.panel, (vec_end - b) / L));
    spmm_panel_n<T, I, kPanelWide, kOff>(a, nv, a.xt + b, a.yt + b, a.batch, r0, r1);
  }
  if constexpr (!kOff) {
    if (a.tail) spmm_panel<T, I, 1, false>(a, a.xt_tail, a.yt_tail, L, r0, r1);
  }
}

// ---- backward ---------------------------------------------------------------------------------

// One nonzero k (CSC value w) of column j, reading dy = dyt[row[k]] (or dyt + dsrc[k]; dyt offset to the
// panel, ld its row stride): dx += w * dy, p = <dy, x_j> lane-wise.
template <typename T, typename I, int V, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI void sddmm_nonzero(const BwdArgs<T, I>& a, const T* dyt, int64_t ld, int64_t k, const Vec<T>* x,
                                   Vec<T>* dx, Vec<T>& p) {
  constexpr int L = kLanes<T>;
  const T* dy = kOff ? dyt + a.dsrc[k] : dyt + static_cast<int64_t>(a.row[k]) * ld;
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
template <typename T, typename I, int V, bool kDx, bool kDv, bool kOff>
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
        for (int l = 0; l < L; ++l) sddmm_nonzero<T, I, V, kDx, kDv, kOff>(a, dyt, ld, k0 + l, x, dx[l & 1], p[l]);
      } else {
        for (int l = 0; l < n; ++l) sddmm_nonzero<T, I, V, kDx, kDv, kOff>(a, dyt, ld, k0 + l, x, dx[0], p[l]);
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
template <typename T, typename I, int V, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI void sddmm_panel_n(const BwdArgs<T, I>& a, int nv, const T* dyt, const T* xt, T* dxt, int64_t ld,
                                   bool first, int64_t j0, int64_t j1) {
  if constexpr (V > 0) {
    if (nv == V) {
      sddmm_panel<T, I, V, kDx, kDv, kOff>(a, dyt, xt, dxt, ld, first, j0, j1);
    } else {
      sddmm_panel_n<T, I, V - 1, kDx, kDv, kOff>(a, nv, dyt, xt, dxt, ld, first, j0, j1);
    }
  }
}

template <typename T, typename I, bool kDx, bool kDv, bool kOff>
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
    sddmm_panel_n<T, I, kPanelWide, kDx, kDv, kOff>(a, nv, a.dyt + b, a.xt + b, kDx ? a.dxt + b : nullptr, a.batch,
                                                    b == 0, j0, j1);
  }
  if constexpr (!kOff) {
    if (a.tail) sddmm_panel<T, I, 1, kDx, kDv, false>(a, a.dyt_tail, a.xt_tail, a.dxt_tail, L, vec_end == 0, j0, j1);
  }
  if constexpr (kDv) {
    for (int64_t k = kb; k < ke; ++k) {
      __builtin_prefetch(a.dvalues + a.perm[std::min(k + kPermAhead, ke - 1)], 1);
      a.dvalues[a.perm[k]] = a.dots[k];
    }
  }
}

// The entries pick the kernel variant with plain branches: a lambda here would be a function of its
// own, compiled for the default target only, with the always-inline kernels inlined into it.
template <typename T, typename I>
FFOPS_SPARSE_AI void spmm_rows_entry(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) {
  if (a.src) {
    spmm_rows_impl<T, I, true>(a, r0, r1);
  } else {
    spmm_rows_impl<T, I, false>(a, r0, r1);
  }
}

template <typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void sddmm_cols_variant(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {
  if (a.dxt && a.dvalues) {
    sddmm_cols_impl<T, I, true, true, kOff>(a, j0, j1);
  } else if (a.dxt) {
    sddmm_cols_impl<T, I, true, false, kOff>(a, j0, j1);
  } else {
    sddmm_cols_impl<T, I, false, true, kOff>(a, j0, j1);
  }
}

template <typename T, typename I>
FFOPS_SPARSE_AI void sddmm_cols_entry(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {
  if (a.dsrc) {
    sddmm_cols_variant<T, I, true>(a, j0, j1);
  } else {
    sddmm_cols_variant<T, I, false>(a, j0, j1);
  }
}

}  // namespace

// One multiversioned (AVX-512 / AVX2 / baseline) entry per value and index type.
#define FFOPS_SPARSE_KERNELS(T, I)                                                                                  \
  FFOPS_MULTIVERSION void spmm_rows(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) { spmm_rows_entry(a, r0, r1); } \
  FFOPS_MULTIVERSION void sddmm_cols(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) { sddmm_cols_entry(a, j0, j1); }

FFOPS_SPARSE_KERNELS(float, int32_t)
FFOPS_SPARSE_KERNELS(float, int64_t)
FFOPS_SPARSE_KERNELS(double, int32_t)
FFOPS_SPARSE_KERNELS(double, int64_t)

#undef FFOPS_SPARSE_KERNELS

}  // namespace ffops::cpu::sparse
