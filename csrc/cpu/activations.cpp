// Packed-code activations on CPU (ReGELU2, ReSiLU2, Few-Bit): exact forward plus k-bit codes,
// backward from the codes. Schemas and the math: csrc/ops.cpp; the packing layout:
// ffops/reference/memory.py (8 elements fill exactly `bits` bytes, little-endian bit stream).
//
// Work is split into chunks of kChunk elements (a multiple of 8, so every chunk starts on a byte
// boundary of the packed codes) and parallelized over chunks. Per chunk: convert to float, apply
// the activation in one vectorized loop (csrc/cpu/act_math.h), count the borders below each
// element in a vectorized loop, pack 8 codes per `bits` bytes. The backward expands the codes into
// levels (a per-byte table for 1, 2 and 4 bits) and multiplies in one vectorized loop.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <tuple>
#include <vector>

#include "cpu/act_math.h"
#include "cpu/alloc.h"
#include "cpu/convert.h"
#include "cpu/row_math.h"
#include "memory_checks.h"

namespace ffops::cpu {
namespace {

using namespace actmath;

constexpr int64_t kChunk = 2048;
constexpr int64_t kGrainChunks = 16;  // 32k elements per task at least

// ---- forward ------------------------------------------------------------------------------------

template <typename A, int FN>
FFOPS_AI void act_block(const A* x, A* y, int64_t n) {
  if constexpr (std::is_same_v<A, float>) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = act_f<FN>(x[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = act_d<FN>(x[i]);
  }
}

template <typename A>
FFOPS_AI void act_dispatch(int fn, const A* x, A* y, int64_t n) {
  switch (fn) {
    case kGelu: act_block<A, kGelu>(x, y, n); break;
    case kGeluTanh: act_block<A, kGeluTanh>(x, y, n); break;
    case kSilu: act_block<A, kSilu>(x, y, n); break;
    case kTanh: act_block<A, kTanh>(x, y, n); break;
    case kSigmoid: act_block<A, kSigmoid>(x, y, n); break;
    case kSoftplus: act_block<A, kSoftplus>(x, y, n); break;
    case kElu: act_block<A, kElu>(x, y, n); break;
    default: act_block<A, kMish>(x, y, n); break;
  }
}

// Pack codes c[0..n) (each < 2^bits) into ceil(n * bits / 8) bytes at out.
FFOPS_AI void pack_codes(const uint8_t* c, int64_t n, int bits, uint8_t* out) {
  const int64_t groups = n / 8;
  for (int64_t g = 0; g < groups; ++g) {
    uint32_t w = 0;
    for (int k = 0; k < 8; ++k) w |= static_cast<uint32_t>(c[8 * g + k]) << (bits * k);
    for (int b = 0; b < bits; ++b) out[g * bits + b] = static_cast<uint8_t>(w >> (8 * b));
  }
  const int64_t rest = n - groups * 8;
  if (rest > 0) {
    uint32_t w = 0;
    for (int k = 0; k < rest; ++k) w |= static_cast<uint32_t>(c[8 * groups + k]) << (bits * k);
    const int64_t nbytes = (rest * bits + 7) / 8;
    for (int b = 0; b < nbytes; ++b) out[groups * bits + b] = static_cast<uint8_t>(w >> (8 * b));
  }
}

// One chunk of the forward: y = f(x), codes of x packed at `out_codes`.
template <typename T>
FFOPS_AI void fwd_chunk_impl(const T* x, T* y, uint8_t* out_codes, int64_t n, int fn, const opmath_t<T>* borders,
                             int nb, int bits) {
  using A = opmath_t<T>;
  alignas(64) A xa[kChunk];
  alignas(64) A ya[kChunk];
  alignas(64) uint8_t c[kChunk];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    xa[i] = cvt::ld(x, i);
    c[i] = 0;
  }
  act_dispatch<A>(fn, xa, ya, n);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) cvt::st(y, i, ya[i]);
  for (int j = 0; j < nb; ++j) {
    const A b = borders[j];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) c[i] += xa[i] > b ? 1 : 0;
  }
  pack_codes(c, n, bits, out_codes);
}

// ---- backward -----------------------------------------------------------------------------------

// lv[0..n) = levels[code[i]] for the n codes packed at `codes` (n <= kChunk).
template <typename A>
FFOPS_AI void expand_levels(const uint8_t* codes, int64_t n, int bits, const A* levels, const A* byte_table, A* lv) {
  const int64_t nbytes = (n * bits + 7) / 8;
  if (bits != 3) {
    const int per = 8 / bits;  // elements per byte
    for (int64_t b = 0; b < nbytes; ++b) std::memcpy(lv + b * per, byte_table + codes[b] * per, per * sizeof(A));
    return;
  }
  for (int64_t g = 0; g * 8 < n; ++g) {
    uint32_t w = 0;
    for (int b = 0; b < 3 && g * 3 + b < nbytes; ++b) w |= static_cast<uint32_t>(codes[g * 3 + b]) << (8 * b);
    for (int k = 0; k < 8; ++k) lv[8 * g + k] = levels[(w >> (3 * k)) & 7u];
  }
}

template <typename T>
FFOPS_AI void bwd_chunk_impl(const T* g, const uint8_t* codes, T* dx, int64_t n, int bits, const opmath_t<T>* levels,
                             const opmath_t<T>* byte_table) {
  using A = opmath_t<T>;
  alignas(64) A lv[kChunk];
  expand_levels<A>(codes, n, bits, levels, byte_table, lv);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) cvt::st(dx, i, cvt::ld(g, i) * lv[i]);
}

// One multiversioned entry point per storage type (target_clones needs plain functions).
#define FFOPS_ACT_CHUNKS_FOR(T)                                                                              \
  FFOPS_MULTIVERSION void fwd_chunk(const T* x, T* y, uint8_t* out, int64_t n, int fn,                        \
                                    const opmath_t<T>* borders, int nb, int bits) {                          \
    fwd_chunk_impl<T>(x, y, out, n, fn, borders, nb, bits);                                                   \
  }                                                                                                           \
  FFOPS_MULTIVERSION void bwd_chunk(const T* g, const uint8_t* codes, T* dx, int64_t n, int bits,             \
                                    const opmath_t<T>* levels, const opmath_t<T>* table) {                   \
    bwd_chunk_impl<T>(g, codes, dx, n, bits, levels, table);                                                  \
  }

FFOPS_ACT_CHUNKS_FOR(float)
FFOPS_ACT_CHUNKS_FOR(double)
FFOPS_ACT_CHUNKS_FOR(c10::Half)
FFOPS_ACT_CHUNKS_FOR(c10::BFloat16)
#undef FFOPS_ACT_CHUNKS_FOR

// ---- operators ----------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> packed_act_fwd(const at::Tensor& x, int64_t fn, at::ArrayRef<double> borders,
                                                  at::ArrayRef<double> levels, int64_t bits) {
  check_packed_act_args(x, "x", fn, borders, levels, bits, kNumFns);
  const int64_t n = x.numel();
  at::Tensor y = empty_large(x.sizes(), x.options());
  at::Tensor codes = at::empty({packed_nbytes(n, bits)}, x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffops_packed_act_fwd", [&] {
    using A = opmath_t<scalar_t>;
    std::array<A, 15> b{};
    for (size_t j = 0; j < borders.size(); ++j) b[j] = static_cast<A>(borders[j]);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    uint8_t* cp = codes.mutable_data_ptr<uint8_t>();
    const int nb = static_cast<int>(borders.size()), k = static_cast<int>(bits), f = static_cast<int>(fn);
    at::parallel_for(0, (n + kChunk - 1) / kChunk, kGrainChunks, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        const int64_t start = ch * kChunk;
        fwd_chunk(xp + start, yp + start, cp + start / 8 * k, std::min(kChunk, n - start), f, b.data(), nb, k);
      }
    });
  });
  return {y, codes};
}

at::Tensor packed_act_bwd(const at::Tensor& grad_y, const at::Tensor& codes, at::ArrayRef<double> levels,
                          int64_t bits) {
  check_packed_act_bwd_args(grad_y, codes, levels, bits);
  const int64_t n = grad_y.numel();
  at::Tensor dx = empty_large(grad_y.sizes(), grad_y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_y.scalar_type(), "ffops_packed_act_bwd", [&] {
    using A = opmath_t<scalar_t>;
    const int k = static_cast<int>(bits);
    std::array<A, 16> lv{};
    for (size_t j = 0; j < levels.size(); ++j) lv[j] = static_cast<A>(levels[j]);
    // byte -> the levels of its 8 / bits elements (unused for 3 bits)
    std::vector<A> table;
    if (k != 3) {
      const int per = 8 / k;
      table.resize(256 * per);
      for (int byte = 0; byte < 256; ++byte)
        for (int e = 0; e < per; ++e) table[byte * per + e] = lv[(byte >> (k * e)) & ((1 << k) - 1)];
    }
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    const uint8_t* cp = codes.const_data_ptr<uint8_t>();
    scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, (n + kChunk - 1) / kChunk, kGrainChunks, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        const int64_t start = ch * kChunk;
        bwd_chunk(gp + start, cp + start / 8 * k, dp + start, std::min(kChunk, n - start), k, lv.data(),
                  table.data());
      }
    });
  });
  return dx;
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("packed_act_fwd", &ffops::cpu::packed_act_fwd);
  m.impl("packed_act_bwd", &ffops::cpu::packed_act_bwd);
}
