// Packed-code activations on CPU (ReGELU2, ReSiLU2, Few-Bit): exact forward plus k-bit codes,
// backward from the codes (packed_act_fwd / packed_act_bwd). Schemas and the math: csrc/ops.cpp; the
// packing layout: ffops/reference/memory.py (8 elements fill exactly `bits` bytes, little-endian bit
// stream). Argument checks shared with CUDA: csrc/packed_act.h; CUDA: csrc/cuda/packed_act{.cu,_cuda.cpp};
// C++ autograd: csrc/packed_act.cpp.
//
// Work is split into chunks of kChunk elements (a multiple of 8, so every chunk starts on a byte
// boundary of the packed codes) and parallelized over chunks. Per chunk: convert to float, apply
// the activation in one vectorized loop (csrc/cpu/packed_act_math.h), count the borders below each
// element in a vectorized loop (16-bit inputs: on their bit patterns), pack 8 codes per `bits` bytes
// with word operations. The backward spreads the codes back to one byte each and multiplies by the
// gathered level, both vectorized.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <tuple>
#include <type_traits>

#include "cpu/alloc.h"
#include "cpu/convert.h"
#include "cpu/packed_act_math.h"
#include "cpu/row_math.h"
#include "packed_act.h"

namespace ffops::cpu {
namespace {

using namespace actmath;

constexpr int64_t kChunk = 2048;
constexpr int64_t kGrainChunks = 16;  // 32k elements per task at least

// ---- forward ------------------------------------------------------------------------------------

// y[i] = f(x[i]) in the compute type, converted on load and store (one pass).
template <typename T, int FN>
FFOPS_AI void act_block(const T* x, T* y, int64_t n) {
  if constexpr (std::is_same_v<T, double>) {
    for (int64_t i = 0; i < n; ++i) y[i] = act_d<FN>(x[i]);
  } else {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) cvt::st(y, i, act_f<FN, sizeof(T) == 2>(cvt::ld(x, i)));
  }
}

template <typename T>
FFOPS_AI void act_dispatch(int fn, const T* x, T* y, int64_t n) {
  switch (fn) {
    case kGelu: act_block<T, kGelu>(x, y, n); break;
    case kGeluTanh: act_block<T, kGeluTanh>(x, y, n); break;
    case kSilu: act_block<T, kSilu>(x, y, n); break;
    case kTanh: act_block<T, kTanh>(x, y, n); break;
    case kSigmoid: act_block<T, kSigmoid>(x, y, n); break;
    case kSoftplus: act_block<T, kSoftplus>(x, y, n); break;
    case kElu: act_block<T, kElu>(x, y, n); break;
    case kMish: act_block<T, kMish>(x, y, n); break;
    case kHardswish: act_block<T, kHardswish>(x, y, n); break;
    case kLeakyRelu: act_block<T, kLeakyRelu>(x, y, n); break;
    case kSelu: act_block<T, kSelu>(x, y, n); break;
    case kCelu: act_block<T, kCelu>(x, y, n); break;
    case kLogSigmoid: act_block<T, kLogSigmoid>(x, y, n); break;
    case kSoftsign: act_block<T, kSoftsign>(x, y, n); break;
    default: act_block<T, kRelu6>(x, y, n); break;
  }
}

// Pack codes c[0..n) (each < 2^bits) into ceil(n * bits / 8) bytes at out. Whole 8-element groups
// combine the code bytes of one machine word with shifts and masks (vectorizable); a last partial
// group goes element by element.
FFOPS_AI void pack_codes(const uint8_t* c, int64_t n, int bits, uint8_t* out) {
  const int64_t groups = n / 8;
  if (bits == 1) {
#pragma omp simd
    for (int64_t w = 0; w < groups; ++w) {
      uint64_t v;
      std::memcpy(&v, c + 8 * w, 8);
      out[w] = static_cast<uint8_t>(((v & 0x0101010101010101ULL) * 0x0102040810204080ULL) >> 56);
    }
  } else if (bits == 2) {
#pragma omp simd
    for (int64_t w = 0; w < groups * 2; ++w) {
      uint32_t v;
      std::memcpy(&v, c + 4 * w, 4);
      out[w] = static_cast<uint8_t>((v & 0x3u) | ((v >> 6) & 0xCu) | ((v >> 12) & 0x30u) | ((v >> 18) & 0xC0u));
    }
  } else if (bits == 4) {
#pragma omp simd
    for (int64_t w = 0; w < groups * 4; ++w) {
      uint16_t v;
      std::memcpy(&v, c + 2 * w, 2);
      out[w] = static_cast<uint8_t>((v & 0xFu) | ((v >> 4) & 0xF0u));
    }
  } else {
    alignas(64) uint32_t word[kChunk / 8];
#pragma omp simd
    for (int64_t g = 0; g < groups; ++g) {
      uint64_t v;
      std::memcpy(&v, c + 8 * g, 8);
      uint32_t r = 0;
      for (int k = 0; k < 8; ++k) r |= static_cast<uint32_t>((v >> (8 * k)) & 7u) << (3 * k);
      word[g] = r;
    }
    for (int64_t g = 0; g < groups; ++g) {
      out[3 * g] = static_cast<uint8_t>(word[g]);
      out[3 * g + 1] = static_cast<uint8_t>(word[g] >> 8);
      out[3 * g + 2] = static_cast<uint8_t>(word[g] >> 16);
    }
  }
  if (groups * 8 < n) {
    const int64_t m = n - groups * 8;
    uint32_t w = 0;
    for (int k = 0; k < m; ++k) w |= static_cast<uint32_t>(c[8 * groups + k]) << (bits * k);
    for (int b = 0; b < (m * bits + 7) / 8; ++b) out[groups * bits + b] = static_cast<uint8_t>(w >> (8 * b));
  }
}

// ci[i] = number of the NB borders below x[i] (one pass; the borders stay in registers).
template <typename T, typename I, int NB>
FFOPS_AI void count_borders(const T* x, const opmath_t<T>* borders, int64_t n, I* ci) {
  opmath_t<T> b[NB];
  for (int j = 0; j < NB; ++j) b[j] = borders[j];
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const opmath_t<T> v = cvt::ld(x, i);
    I count = 0;
    for (int j = 0; j < NB; ++j) count = v > b[j] ? count + 1 : count;  // a compare and a masked add each
    ci[i] = count;
  }
}

// 16-bit inputs (half, bfloat16) compare their bit patterns instead: order_key maps a pattern to an
// int16 in the order of the values (+-0 -> 0, negatives mirrored below), so a vector compares 32
// elements at once instead of 16 floats, and x > b  <=>  order_key(x) > border_key(b).
FFOPS_AI int16_t order_key(uint16_t u) {
  const auto mag = static_cast<int16_t>(u & 0x7FFFu);
  return (u & 0x8000u) ? static_cast<int16_t>(-mag) : mag;
}

// The key of the largest T value <= b: b rounded to nearest, one key lower if that rounded up.
template <typename T>
int16_t border_key(float b) {
  const T r = static_cast<T>(b);
  uint16_t u;
  std::memcpy(&u, &r, sizeof u);
  const int16_t k = order_key(u);
  return static_cast<float>(r) > b ? static_cast<int16_t>(k - 1) : k;
}

// The key of +inf: a NaN's key is above it (or below -inf's), and a NaN's code is 0.
template <typename T>
constexpr int16_t inf_key() {
  return std::is_same_v<T, c10::Half> ? 0x7C00 : 0x7F80;
}

// c[i] = number of the NB border keys below x[i]'s key (0 for NaN).
template <typename T, int NB>
FFOPS_AI void count_border_keys(const T* x, const int16_t* keys, int64_t n, uint8_t* c) {
  int16_t k[NB];
  for (int j = 0; j < NB; ++j) k[j] = keys[j];
  const auto* bits = reinterpret_cast<const cvt::u16_alias*>(x);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const int16_t v = order_key(bits[i]);
    int16_t count = 0;
    for (int j = 0; j < NB; ++j) count = v > k[j] ? static_cast<int16_t>(count + 1) : count;
    c[i] = static_cast<uint8_t>(v > inf_key<T>() ? 0 : count);
  }
}

// One chunk of the forward: y = f(x), codes of x packed at `out_codes`. `keys`: the borders'
// border_key for 16-bit T (unused otherwise).
template <typename T>
FFOPS_AI void fwd_chunk_impl(const T* x, T* y, uint8_t* out_codes, int64_t n, int fn, const opmath_t<T>* borders,
                             const int16_t* keys, int nb, int bits) {
  alignas(64) uint8_t c[kChunk];
  act_dispatch<T>(fn, x, y, n);
  // nb = 2^bits - 1: a fixed count lets every element meet all borders in registers
  if constexpr (sizeof(T) == 2) {
    switch (nb) {
      case 1: count_border_keys<T, 1>(x, keys, n, c); break;
      case 3: count_border_keys<T, 3>(x, keys, n, c); break;
      case 7: count_border_keys<T, 7>(x, keys, n, c); break;
      default: count_border_keys<T, 15>(x, keys, n, c); break;
    }
  } else {
    using I = std::conditional_t<std::is_same_v<T, double>, int64_t, int32_t>;  // lanes as wide as T's
    alignas(64) I ci[kChunk];
    switch (nb) {
      case 1: count_borders<T, I, 1>(x, borders, n, ci); break;
      case 3: count_borders<T, I, 3>(x, borders, n, ci); break;
      case 7: count_borders<T, I, 7>(x, borders, n, ci); break;
      default: count_borders<T, I, 15>(x, borders, n, ci); break;
    }
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) c[i] = static_cast<uint8_t>(ci[i]);
  }
  pack_codes(c, n, bits, out_codes);
}

// ---- backward -----------------------------------------------------------------------------------

// The codes of the n elements packed at `codes` (n <= kChunk), one byte each. Whole 8-element groups
// spread the bits of their bytes with word operations (vectorizable); a last partial group goes
// element by element (reading only the bytes that exist).
FFOPS_AI void unpack_codes(const uint8_t* codes, int64_t n, int bits, uint8_t* c) {
  const int64_t groups = n / 8;
  if (bits == 1) {
#pragma omp simd
    for (int64_t w = 0; w < groups; ++w) {
      const uint64_t y = (codes[w] * 0x0101010101010101ULL) & 0x8040201008040201ULL;  // byte k: bit k of the code byte
      const uint64_t v = ((y + 0x7F7F7F7F7F7F7F7FULL) >> 7) & 0x0101010101010101ULL;  // nonzero byte -> 1
      std::memcpy(c + 8 * w, &v, 8);
    }
  } else if (bits == 2) {
#pragma omp simd
    for (int64_t w = 0; w < groups * 2; ++w) {
      const uint32_t b = codes[w];
      const uint32_t v = (b & 0x3u) | ((b & 0xCu) << 6) | ((b & 0x30u) << 12) | ((b & 0xC0u) << 18);
      std::memcpy(c + 4 * w, &v, 4);
    }
  } else if (bits == 4) {
#pragma omp simd
    for (int64_t w = 0; w < groups * 4; ++w) {
      const uint16_t b = codes[w];
      const uint16_t v = static_cast<uint16_t>((b & 0xFu) | ((b & 0xF0u) << 4));
      std::memcpy(c + 2 * w, &v, 2);
    }
  } else {
#pragma omp simd
    for (int64_t g = 0; g < groups; ++g) {
      const uint64_t w = codes[3 * g] | (static_cast<uint64_t>(codes[3 * g + 1]) << 8) |
                         (static_cast<uint64_t>(codes[3 * g + 2]) << 16);
      uint64_t v = 0;
      for (int k = 0; k < 8; ++k) v |= ((w >> (3 * k)) & 7u) << (8 * k);
      std::memcpy(c + 8 * g, &v, 8);
    }
  }
  if (groups * 8 < n) {
    const int64_t m = n - groups * 8, first = groups * bits;
    uint32_t w = 0;
    for (int b = 0; b < (m * bits + 7) / 8; ++b) w |= static_cast<uint32_t>(codes[first + b]) << (8 * b);
    for (int k = 0; k < m; ++k) c[groups * 8 + k] = static_cast<uint8_t>((w >> (bits * k)) & ((1u << bits) - 1u));
  }
}

template <typename T>
FFOPS_AI void bwd_chunk_impl(const T* g, const uint8_t* codes, T* dx, int64_t n, int bits, const opmath_t<T>* levels) {
  alignas(64) uint8_t c[kChunk];
  unpack_codes(codes, n, bits, c);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) cvt::st(dx, i, cvt::ld(g, i) * levels[c[i]]);
}

// One multiversioned entry point per storage type (target_clones needs plain functions).
#define FFOPS_ACT_CHUNKS_FOR(T)                                                                                    \
  FFOPS_MULTIVERSION void fwd_chunk(const T* x, T* y, uint8_t* out, int64_t n, int fn, const opmath_t<T>* borders, \
                                    const int16_t* keys, int nb, int bits) {                                       \
    fwd_chunk_impl<T>(x, y, out, n, fn, borders, keys, nb, bits);                                                  \
  }                                                                                                                \
  FFOPS_MULTIVERSION void bwd_chunk(const T* g, const uint8_t* codes, T* dx, int64_t n, int bits,                  \
                                    const opmath_t<T>* levels) {                                                   \
    bwd_chunk_impl<T>(g, codes, dx, n, bits, levels);                                                              \
  }

FFOPS_ACT_CHUNKS_FOR(float)
FFOPS_ACT_CHUNKS_FOR(double)
FFOPS_ACT_CHUNKS_FOR(c10::Half)
FFOPS_ACT_CHUNKS_FOR(c10::BFloat16)
#undef FFOPS_ACT_CHUNKS_FOR

// ---- operators ----------------------------------------------------------------------------------

std::tuple<at::Tensor, at::Tensor> packed_act_fwd(const at::Tensor& x, int64_t fn, at::ArrayRef<double> borders,
                                                  at::ArrayRef<double> levels, int64_t bits) {
  static_assert(static_cast<int64_t>(kNumFns) == kNumActivations, "activation ids of csrc/packed_act.h");
  check_packed_act_args(x, "x", fn, borders, levels, bits);
  const int64_t n = x.numel();
  at::Tensor y = empty_large(x.sizes(), x.options());
  at::Tensor codes = at::empty({packed_nbytes(n, bits)}, x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "ffops_packed_act_fwd", [&] {
    using A = opmath_t<scalar_t>;
    std::array<A, 15> b{};
    std::array<int16_t, 15> keys{};
    for (size_t j = 0; j < borders.size(); ++j) {
      b[j] = static_cast<A>(borders[j]);
      if constexpr (sizeof(scalar_t) == 2) keys[j] = border_key<scalar_t>(b[j]);
    }
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    uint8_t* cp = codes.mutable_data_ptr<uint8_t>();
    const int nb = static_cast<int>(borders.size()), k = static_cast<int>(bits), f = static_cast<int>(fn);
    at::parallel_for(0, (n + kChunk - 1) / kChunk, kGrainChunks, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        const int64_t start = ch * kChunk;
        fwd_chunk(xp + start, yp + start, cp + start / 8 * k, std::min(kChunk, n - start), f, b.data(), keys.data(), nb,
                  k);
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
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    const uint8_t* cp = codes.const_data_ptr<uint8_t>();
    scalar_t* dp = dx.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, (n + kChunk - 1) / kChunk, kGrainChunks, [&](int64_t begin, int64_t end) {
      for (int64_t ch = begin; ch < end; ++ch) {
        const int64_t start = ch * kChunk;
        bwd_chunk(gp + start, cp + start / 8 * k, dp + start, std::min(kChunk, n - start), k, lv.data());
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
