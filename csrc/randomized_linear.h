// The random sketch of the randomized linear op (rmm_sketch; schema in csrc/ops.cpp, specification
// ffops/reference/randomized_linear.py): the counter-based hash that gives entry (r, c) of S, for
// host and device code alike, and the argument checks shared by the CPU registration
// (csrc/cpu/randomized_linear.cpp) and the CUDA one (csrc/cuda/randomized_linear_cuda.cpp).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define FFOPS_HD __host__ __device__ __forceinline__
#else
#define FFOPS_HD inline
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#endif

namespace ffops::rmm {

enum Kind : int { kGaussian = 0, kRademacher = 1, kNumKinds };

// Wellons' lowbias32 finalizer.
FFOPS_HD uint32_t mix32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  return x ^ (x >> 16);
}

// The row part of the hash (shared by a whole row of S) and the column part.
FFOPS_HD uint32_t row_hash(int64_t r, uint64_t seed) {
  return mix32(static_cast<uint32_t>(r) * 0x9E3779B1u + static_cast<uint32_t>(seed));
}
FFOPS_HD uint32_t col_term(int64_t c, uint64_t seed) {
  return static_cast<uint32_t>(c) * 0x85EBCA77u + static_cast<uint32_t>(seed >> 32);
}

// S[r, c] * sqrt(k), in A (float or double), from h = mix32(row_hash(r) ^ col_term(c)).
template <int KIND, typename A>
FFOPS_HD A entry(uint32_t h) {
  if constexpr (KIND == kRademacher) {
    return (h >> 31) ? A(-1) : A(1);
  } else {
    const uint32_t h2 = mix32(h ^ 0x68E31DA4u);
    const A u1 = (A(h >> 8) + A(0.5)) * A(5.9604644775390625e-08);  // 2^-24
    const A u2 = A(h2 >> 8) * A(5.9604644775390625e-08);
    return std::sqrt(A(-2) * std::log(u1)) * std::cos(A(6.283185307179586476925) * u2);
  }
}

#ifndef __CUDACC__
inline void check_rmm_sketch_args(const at::Tensor& a, const at::Tensor& seed, int64_t k, int64_t kind) {
  TORCH_CHECK(a.dim() == 2 && a.is_contiguous(), "ffops: a must be a contiguous 2-D [rows, n] tensor, got ", a.sizes());
  TORCH_CHECK(at::isFloatingType(a.scalar_type()), "ffops: a must be floating point, got ", a.scalar_type());
  TORCH_CHECK(seed.device().is_cpu() && seed.scalar_type() == at::kLong && seed.numel() == 1,
              "ffops: seed must be a one-element int64 CPU tensor, got ", seed.scalar_type(), " ", seed.sizes(), " on ",
              seed.device());
  TORCH_CHECK(k >= 1, "ffops: k must be >= 1, got ", k);
  TORCH_CHECK(kind >= 0 && kind < kNumKinds, "ffops: kind must be 0 (gaussian) or 1 (rademacher), got ", kind);
}
#endif

}  // namespace ffops::rmm
