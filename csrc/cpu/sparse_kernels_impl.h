// The CPU kernels of the sparse family: SpMM (forward) and the fused transposed-SpMM + SDDMM
// (backward) over a CSR weight, on feature-major activations (API and argument structs:
// csrc/cpu/sparse_kernels.h; ops: csrc/cpu/sparse_linear.cpp, csrc/cpu/sparse_conv.cpp).
//   forward (CSR order):  each output row yt[i, panel] stays in registers while the row's nonzeros
//                         stream past: acc += w * x_k[panel].
//   backward (CSC order): one FMA pass; column j keeps its dx accumulator in registers (xt[j, panel]
//                         stays in L1), and each nonzero's dy_k[panel] is loaded once for both
//                         dx += w * dy and the dot <dy, x_j> that gives dvalues. The permutation
//                         between CSC and the CSR-ordered values / dvalues is applied in a gather
//                         pass before it and a scatter pass after it.
// The batch is cut into panels of a few vectors so the slab of xt (dyt) that the rows (columns)
// gather from stays in L2; the last B % kChunk columns go through zero-padded copies. Threads own
// contiguous row (column) ranges of equal nonzero count: no atomics, no barriers.
//
// Everything is a template over a Blocking: the vector width and how many vectors (and independent
// accumulator sets) a panel keeps in registers, sized to the ISA's register file, so that no
// accumulator spills: 32 AVX-512 registers hold 4 x 2 forward accumulators of 64 bytes, 16 AVX2
// registers 8 of 32 bytes. Each ISA's translation unit (sparse_kernels_avx512.cpp, _avx2.cpp,
// _baseline.cpp) instantiates the entries for its blocking under its target; sparse_kernels.cpp
// picks one per call by vector_isa().
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/sparse_kernels.h"
#include "cpu/sparse_simd.h"

namespace ffops::cpu::sparse {

// W-byte vectors; forward panels of up to FV vectors with FS accumulator sets (FS * FV independent
// FMA chains per row), backward panels of BV vectors with BS dx accumulator sets.
template <int W, int FV, int FS, int BV, int BS>
struct Blocking {
  static constexpr int kBytes = W, kFwdVectors = FV, kFwdSets = FS, kBwdVectors = BV, kBwdSets = BS;
};

namespace detail {

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
// S accumulator sets (nonzeros k mod S) give S * V independent FMA chains.
template <int W, int V, int S, typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void spmm_panel(const FwdArgs<T, I>& a, const T* xt, T* yt, int64_t ld, int64_t r0, int64_t r1) {
  constexpr int L = kVecLanes<T, W>;
  for (int64_t i = r0; i < r1; ++i) {
    Vec<T, W> acc[S][V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
      acc[0][v] = broadcast<T, W>(a.bias ? a.bias[i] : T(0));
#pragma GCC unroll 4
      for (int s = 1; s < S; ++s) acc[s][v] = Vec<T, W>{};
    }
    int64_t k = a.crow[i];
    const int64_t k1 = a.crow[i + 1];
    for (; k + S <= k1; k += S) {
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) {
        const T* x = x_row<kOff>(a, xt, ld, k + s);
        const T w = a.values[k + s];
#pragma GCC unroll 16
        for (int v = 0; v < V; ++v) acc[s][v] += w * load<T, W>(x + v * L);
      }
    }
    for (; k < k1; ++k) {
      const T* x = x_row<kOff>(a, xt, ld, k);
      const T w = a.values[k];
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[0][v] += w * load<T, W>(x + v * L);
    }
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
#pragma GCC unroll 4
      for (int s = 1; s < S; ++s) acc[0][v] += acc[s][v];
      store<T, W>(yt + i * ld + v * L, acc[0][v]);
    }
  }
}

// spmm_panel for a runtime width nv <= V.
template <int W, int V, int S, typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void spmm_panel_n(const FwdArgs<T, I>& a, int nv, const T* xt, T* yt, int64_t ld, int64_t r0,
                                  int64_t r1) {
  if constexpr (V > 0) {
    if (nv == V) {
      spmm_panel<W, V, S, T, I, kOff>(a, xt, yt, ld, r0, r1);
    } else {
      spmm_panel_n<W, V - 1, S, T, I, kOff>(a, nv, xt, yt, ld, r0, r1);
    }
  }
}

// Columns [0, end) of xt / yt (row stride ld; end a multiple of the vector width) in panels of pv
// vectors.
template <class B, typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void spmm_span(const FwdArgs<T, I>& a, const T* xt, T* yt, int64_t ld, int64_t end, int pv, int64_t r0,
                               int64_t r1) {
  constexpr int L = kVecLanes<T, B::kBytes>;
  for (int64_t b = 0; b < end; b += pv * L) {
    const int nv = static_cast<int>(std::min<int64_t>(pv, (end - b) / L));
    spmm_panel_n<B::kBytes, B::kFwdVectors, B::kFwdSets, T, I, kOff>(a, nv, xt + b, yt + b, ld, r0, r1);
  }
}

template <class B, typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void spmm_rows_impl(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) {
  constexpr int C = kChunk<T>;
  // the caller's panel (in chunks) bounds the slab; the registers bound the vectors
  const int pv = std::min(B::kFwdVectors, a.panel * 64 / B::kBytes);
  spmm_span<B, T, I, kOff>(a, a.xt, a.yt, a.batch, a.batch / C * C, pv, r0, r1);
  if constexpr (!kOff) {
    if (a.tail) spmm_span<B, T, I, false>(a, a.xt_tail, a.yt_tail, C, C, pv, r0, r1);
  }
}

// ---- backward ---------------------------------------------------------------------------------

// One nonzero k (CSC value w) of column j, reading dy = dyt[row[k]] (or dyt + dsrc[k]; dyt offset to the
// panel, ld its row stride): dx += w * dy; returns <dy, x_j> lane-wise (when kDv).
template <int W, int V, typename T, typename I, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI Vec<T, W> sddmm_nonzero(const BwdArgs<T, I>& a, const T* dyt, int64_t ld, int64_t k, const T* x,
                                        Vec<T, W>* dx) {
  constexpr int L = kVecLanes<T, W>;
  const T* dy = kOff ? dyt + a.dsrc[k] : dyt + static_cast<int64_t>(a.row[k]) * ld;
  const T w = kDx ? a.vt[k] : T(0);
  // vector by vector: one dy vector live at a time, used by both FMAs
  Vec<T, W> s{};
#pragma GCC unroll 16
  for (int v = 0; v < V; ++v) {
    const Vec<T, W> d = load<T, W>(dy + v * L);
    if constexpr (kDx) dx[v] += w * d;
    if constexpr (kDv) s = v == 0 ? load<T, W>(x) * d : s + load<T, W>(x + v * L) * d;
  }
  return s;
}

// Columns j0..j1 of one panel (dyt, xt, dxt offset to the panel; ld their row stride). The dots of
// the first panel are stored, later panels add theirs.
template <int W, int V, int S, typename T, typename I, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI void sddmm_panel(const BwdArgs<T, I>& a, const T* dyt, const T* xt, T* dxt, int64_t ld, bool first,
                                 int64_t j0, int64_t j1) {
  constexpr int L = kVecLanes<T, W>;
  for (int64_t j = j0; j < j1; ++j) {
    const T* x = xt + j * ld;  // read from L1 by each nonzero's FMAs
    Vec<T, W> dx[S][V];        // S accumulator sets (nonzeros k mod S)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) {
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) dx[s][v] = Vec<T, W>{};
    }
    const int64_t k1 = a.ptr[j + 1];
    // Nonzeros in groups of L: their L lane-wise dot vectors are summed together by transpose_sum.
    for (int64_t k0 = a.ptr[j]; k0 < k1; k0 += L) {
      const int n = static_cast<int>(std::min<int64_t>(L, k1 - k0));
      Vec<T, W> dots{};
      if (n == L) {
        auto nonzero = [&](int l) __attribute__((always_inline)) {
          return sddmm_nonzero<W, V, T, I, kDx, kDv, kOff>(a, dyt, ld, k0 + l, x, dx[l % S]);
        };
        if constexpr (kDv) {
          dots = transpose_sum<T, W>(nonzero);
        } else {
#pragma GCC unroll 16
          for (int l = 0; l < L; ++l) nonzero(l);
        }
      } else {
        Vec<T, W> p[L];
        for (int l = 0; l < L; ++l) {
          p[l] = l < n ? sddmm_nonzero<W, V, T, I, kDx, kDv, kOff>(a, dyt, ld, k0 + l, x, dx[0]) : Vec<T, W>{};
        }
        if constexpr (kDv) dots = transpose_sum<T, W>([&](int l) __attribute__((always_inline)) { return p[l]; });
      }
      if constexpr (kDv) {
        // a whole group's dots go out as one vector: a round trip through a stack array stalls on store
        // forwarding (12 % of the AVX2 backward, perf on Zen 4 with FFOPS_CPU_ISA=avx2)
        T* out = a.dots + k0;
        if (n == L) {
          store<T, W>(out, first ? dots : load<T, W>(out) + dots);
        } else {
          T d[L];
          store<T, W>(d, dots);
          for (int l = 0; l < n; ++l) out[l] = first ? d[l] : out[l] + d[l];
        }
      }
    }
    if constexpr (kDx) {
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) {
#pragma GCC unroll 4
        for (int s = 1; s < S; ++s) dx[0][v] += dx[s][v];
        store<T, W>(dxt + j * ld + v * L, dx[0][v]);
      }
    }
  }
}

// sddmm_panel for a runtime width nv <= V.
template <int W, int V, int S, typename T, typename I, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI void sddmm_panel_n(const BwdArgs<T, I>& a, int nv, const T* dyt, const T* xt, T* dxt, int64_t ld,
                                   bool first, int64_t j0, int64_t j1) {
  if constexpr (V > 0) {
    if (nv == V) {
      sddmm_panel<W, V, S, T, I, kDx, kDv, kOff>(a, dyt, xt, dxt, ld, first, j0, j1);
    } else {
      sddmm_panel_n<W, V - 1, S, T, I, kDx, kDv, kOff>(a, nv, dyt, xt, dxt, ld, first, j0, j1);
    }
  }
}

// Columns [0, end) of dyt / xt / dxt (row stride ld; end a multiple of the vector width) in panels of at
// most B::kBwdVectors vectors; `first`: the first of them is the first panel of the batch.
template <class B, typename T, typename I, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI void sddmm_span(const BwdArgs<T, I>& a, const T* dyt, const T* xt, T* dxt, int64_t ld, int64_t end,
                                bool first, int64_t j0, int64_t j1) {
  constexpr int L = kVecLanes<T, B::kBytes>;
  // the caller's panel (in chunks) bounds the slab; the registers bound the vectors
  const int pv = std::min(B::kBwdVectors, a.panel * 64 / B::kBytes);
  for (int64_t b = 0; b < end; b += pv * L) {
    const int nv = static_cast<int>(std::min<int64_t>(pv, (end - b) / L));
    sddmm_panel_n<B::kBytes, B::kBwdVectors, B::kBwdSets, T, I, kDx, kDv, kOff>(
        a, nv, dyt + b, xt + b, kDx ? dxt + b : nullptr, ld, first && b == 0, j0, j1);
  }
}

template <class B, typename T, typename I, bool kDx, bool kDv, bool kOff>
FFOPS_SPARSE_AI void sddmm_cols_impl(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {
  constexpr int C = kChunk<T>;
  const int64_t kb = a.ptr[j0], ke = a.ptr[j1];
  if constexpr (kDx) {
    for (int64_t k = kb; k < ke; ++k) {
      __builtin_prefetch(a.values + a.perm[std::min(k + kPermAhead, ke - 1)]);
      a.vt[k] = a.values[a.perm[k]];
    }
  }
  const int64_t end = a.batch / C * C;
  sddmm_span<B, T, I, kDx, kDv, kOff>(a, a.dyt, a.xt, a.dxt, a.batch, end, true, j0, j1);
  if constexpr (!kOff) {
    if (a.tail) sddmm_span<B, T, I, kDx, kDv, false>(a, a.dyt_tail, a.xt_tail, a.dxt_tail, C, C, end == 0, j0, j1);
  }
  if constexpr (kDv) {
    for (int64_t k = kb; k < ke; ++k) {
      __builtin_prefetch(a.dvalues + a.perm[std::min(k + kPermAhead, ke - 1)], 1);
      a.dvalues[a.perm[k]] = a.dots[k];
    }
  }
}

template <class B, typename T, typename I, bool kOff>
FFOPS_SPARSE_AI void sddmm_cols_variant(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {
  if (a.dxt && a.dvalues) {
    sddmm_cols_impl<B, T, I, true, true, kOff>(a, j0, j1);
  } else if (a.dxt) {
    sddmm_cols_impl<B, T, I, true, false, kOff>(a, j0, j1);
  } else {
    sddmm_cols_impl<B, T, I, false, true, kOff>(a, j0, j1);
  }
}

}  // namespace detail

// The entries pick the kernel variant with plain branches: a lambda here would be a function of its
// own, compiled for the default target only, with the always-inline kernels inlined into it.
template <class B, typename T, typename I>
FFOPS_SPARSE_AI void spmm_rows_entry(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) {
  if (a.src) {
    detail::spmm_rows_impl<B, T, I, true>(a, r0, r1);
  } else {
    detail::spmm_rows_impl<B, T, I, false>(a, r0, r1);
  }
}

template <class B, typename T, typename I>
FFOPS_SPARSE_AI void sddmm_cols_entry(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) {
  if (a.dsrc) {
    detail::sddmm_cols_variant<B, T, I, true>(a, j0, j1);
  } else {
    detail::sddmm_cols_variant<B, T, I, false>(a, j0, j1);
  }
}

// The entries of one ISA (NAME: avx512, avx2, baseline), defined in its translation unit.
#define FFOPS_SPARSE_ISA_ENTRY_DECLS(NAME, T, I)                         \
  void spmm_rows_##NAME(const FwdArgs<T, I>& a, int64_t r0, int64_t r1); \
  void sddmm_cols_##NAME(const BwdArgs<T, I>& a, int64_t j0, int64_t j1);
#define FFOPS_SPARSE_ISA_DECLS(NAME)                  \
  FFOPS_SPARSE_ISA_ENTRY_DECLS(NAME, float, int32_t)  \
  FFOPS_SPARSE_ISA_ENTRY_DECLS(NAME, float, int64_t)  \
  FFOPS_SPARSE_ISA_ENTRY_DECLS(NAME, double, int32_t) \
  FFOPS_SPARSE_ISA_ENTRY_DECLS(NAME, double, int64_t)
FFOPS_SPARSE_ISA_DECLS(avx512)
FFOPS_SPARSE_ISA_DECLS(avx2)
FFOPS_SPARSE_ISA_DECLS(baseline)
#undef FFOPS_SPARSE_ISA_DECLS
#undef FFOPS_SPARSE_ISA_ENTRY_DECLS

// Defines NAME's entries with blocking BLOCKING, compiled under TARGET (an attribute, or nothing).
#define FFOPS_SPARSE_ISA_ENTRIES_FOR(NAME, TARGET, BLOCKING, T, I)                \
  TARGET void spmm_rows_##NAME(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) {  \
    spmm_rows_entry<BLOCKING>(a, r0, r1);                                         \
  }                                                                               \
  TARGET void sddmm_cols_##NAME(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) { \
    sddmm_cols_entry<BLOCKING>(a, j0, j1);                                        \
  }
#define FFOPS_SPARSE_ISA_ENTRIES(NAME, TARGET, BLOCKING)                \
  FFOPS_SPARSE_ISA_ENTRIES_FOR(NAME, TARGET, BLOCKING, float, int32_t)  \
  FFOPS_SPARSE_ISA_ENTRIES_FOR(NAME, TARGET, BLOCKING, float, int64_t)  \
  FFOPS_SPARSE_ISA_ENTRIES_FOR(NAME, TARGET, BLOCKING, double, int32_t) \
  FFOPS_SPARSE_ISA_ENTRIES_FOR(NAME, TARGET, BLOCKING, double, int64_t)

}  // namespace ffops::cpu::sparse
