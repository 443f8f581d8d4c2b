// SIMD building blocks of the sparse kernels (csrc/cpu/sparse_kernels.cpp): a vector of W bytes of
// float or double as a GCC vector extension (W = 64: one AVX-512 register, 32: one AVX2 register,
// 16: one SSE / NEON register), unaligned loads and stores, and a transposing horizontal sum.
//
// Everything here is always_inline, so it is compiled for the target of the ISA-specific kernel that
// uses it (FFOPS_TARGET_*, csrc/cpu/vector_isa.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#define FFOPS_SPARSE_AI inline __attribute__((always_inline))

// Vectors cross no call boundary (all helpers are inlined), so the note that passing a wide vector
// changes with the target is moot here.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ffops::cpu::sparse {

template <typename T, int W>
struct VecTypes;
template <int W>
struct VecTypes<float, W> {
  typedef float vec __attribute__((vector_size(W)));
  typedef int32_t mask __attribute__((vector_size(W)));
};
template <int W>
struct VecTypes<double, W> {
  typedef double vec __attribute__((vector_size(W)));
  typedef int64_t mask __attribute__((vector_size(W)));
};

template <typename T, int W>
using Vec = typename VecTypes<T, W>::vec;
template <typename T, int W>
constexpr int kVecLanes = W / sizeof(T);

template <typename T, int W>
FFOPS_SPARSE_AI Vec<T, W> load(const T* p) {
  Vec<T, W> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T, int W>
FFOPS_SPARSE_AI void store(T* p, const Vec<T, W>& v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T, int W>
FFOPS_SPARSE_AI Vec<T, W> broadcast(T s) {
  return Vec<T, W>{} + s;
}

// One level of the transposing sum combines a and b, each holding partial sums of several sources,
// into one vector of the sums of pairs of their lanes: out[o] = lo[o] + hi[o], with lo / hi the
// "unpack" shuffles at a granularity of E elements: within each span of S lanes, lo interleaves
// E-blocks of the lower halves of a and b (a, b, a, b, ...), hi those of the upper halves. The span is
// one 128-bit lane (Q elements) while E < Q, else the whole vector, so every shuffle is one
// instruction on any of the ISAs: unpcklps / unpckhps (E = 1), unpcklpd / unpckhpd (E = 2 float),
// vperm2f128 (AVX2) or vshuff32x4 (AVX-512) across 128-bit lanes. transpose_sum applies levels
// E = 1, 2, ..., L / 2 to a depth-first tree of the L inputs; the result holds source l in lane l
// (checked for every width by tests/ops/test_sparse_isa.py through the kernels' dvalues).
template <typename T, int W, int E>
constexpr int unpack_source(int o, int half) {
  constexpr int L = kVecLanes<T, W>, Q = 16 / int(sizeof(T));
  constexpr int S = E < Q ? Q : L;
  const int base = o - o % S, i = o % S, block = i / E;
  const int lane = base + half * (S / 2) + (block / 2) * E + i % E;
  return block % 2 == 0 ? lane : L + lane;  // b's lanes follow a's in __builtin_shuffle
}

template <typename T, int W, int E, size_t... O>
FFOPS_SPARSE_AI Vec<T, W> fold_pair_lanes(const Vec<T, W>& a, const Vec<T, W>& b, std::index_sequence<O...>) {
  using M = typename VecTypes<T, W>::mask;
  return __builtin_shuffle(a, b, M{unpack_source<T, W, E>(O, 0)...}) +
         __builtin_shuffle(a, b, M{unpack_source<T, W, E>(O, 1)...});
}

template <typename T, int W, int E>
FFOPS_SPARSE_AI Vec<T, W> fold_pair(const Vec<T, W>& a, const Vec<T, W>& b) {
  return fold_pair_lanes<T, W, E>(a, b, std::make_index_sequence<kVecLanes<T, W>>{});
}

// The transposing sum of the L = kVecLanes lane-wise vectors make(0) .. make(L - 1), built depth
// first: lane l of the result is the sum of the lanes of make(l). L - 1 shuffle-shuffle-add levels
// (fold_pair) for L sums instead of log2(L) steps per sum, and (depth first) only about log2(L) partial results live
// at once, so the vectors make() needs keep their registers. `make(i)` is called in order of i.
template <typename T, int W, int N = kVecLanes<T, W>, typename F>
FFOPS_SPARSE_AI Vec<T, W> transpose_sum(const F& make, int first = 0) {
  if constexpr (N == 1) {
    return make(first);
  } else {
    const Vec<T, W> lo = transpose_sum<T, W, N / 2>(make, first);
    const Vec<T, W> hi = transpose_sum<T, W, N / 2>(make, first + N / 2);
    return fold_pair<T, W, N / 2>(lo, hi);
  }
}

}  // namespace ffops::cpu::sparse
