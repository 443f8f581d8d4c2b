// SIMD building blocks of the sparse linear kernels (csrc/cpu/sparse_linear.cpp): one 64-byte vector of
// float or double as a GCC vector extension (one AVX-512 register; two or four on narrower
// targets), unaligned loads and stores, and a transposing horizontal sum.
//
// Everything here is always_inline, so it is compiled for the target of the multiversioned
// kernel that uses it (FFOPS_MULTIVERSION, csrc/cpu/row_math.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#define FFOPS_SPARSE_AI inline __attribute__((always_inline))

// Vectors cross no call boundary (all helpers are inlined), so the note that passing a 64-byte
// vector changes with AVX-512 is moot here.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace ffops::cpu::sparse {

template <typename T>
struct VecTypes;
template <>
struct VecTypes<float> {
  typedef float vec __attribute__((vector_size(64)));
  typedef int32_t mask __attribute__((vector_size(64)));
};
template <>
struct VecTypes<double> {
  typedef double vec __attribute__((vector_size(64)));
  typedef int64_t mask __attribute__((vector_size(64)));
};

template <typename T>
using Vec = typename VecTypes<T>::vec;
template <typename T>
constexpr int kLanes = 64 / sizeof(T);

template <typename T>
FFOPS_SPARSE_AI Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
FFOPS_SPARSE_AI void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
FFOPS_SPARSE_AI Vec<T> broadcast(T s) {
  return Vec<T>{} + s;
}

// Source lane of output lane `o` for one tree step of transpose_sum (see fold_pair).
template <typename T, int G>
constexpr int fold_source(int o, int half) {
  constexpr int L = kLanes<T>, H = G / 2, P = L / G;
  const int q = o / H, t = o % H;
  return q < P ? q * G + half * H + t : L + (q - P) * G + half * H + t;
}

// a and b each hold L / G sources, G consecutive lanes per source; the result holds the 2L / G
// sources (a's, then b's) in G / 2 lanes each, every lane the sum of two input lanes.
template <typename T, int G, size_t... O>
FFOPS_SPARSE_AI Vec<T> fold_pair(const Vec<T>& a, const Vec<T>& b, std::index_sequence<O...>) {
  using M = typename VecTypes<T>::mask;
  return __builtin_shuffle(a, b, M{fold_source<T, G>(O, 0)...}) +
         __builtin_shuffle(a, b, M{fold_source<T, G>(O, 1)...});
}

template <typename T, int G>
FFOPS_SPARSE_AI void fold_levels(Vec<T>* p) {
  if constexpr (G > 1) {
#pragma GCC unroll 16
    for (int i = 0; i < G / 2; ++i) {
      p[i] = fold_pair<T, G>(p[2 * i], p[2 * i + 1], std::make_index_sequence<kLanes<T>>{});
    }
    fold_levels<T, G / 2>(p);
  }
}

// Lane l of the result is the sum of the lanes of p[l] (L = kLanes<T> inputs; p is overwritten).
// L - 1 shuffle-shuffle-add steps for L sums instead of log2(L) steps per sum.
template <typename T>
FFOPS_SPARSE_AI Vec<T> transpose_sum(Vec<T>* p) {
  fold_levels<T, kLanes<T>>(p);
  return p[0];
}

}  // namespace ffops::cpu::sparse
