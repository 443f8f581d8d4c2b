// Vectorizable loads and stores of the storage types in their compute type (float; double for
// double). c10::Half / c10::BFloat16's own conversions build a temporary struct that stops GCC's
// vectorizer, so these work on the raw 16 bits with integer operations (round to nearest even,
// NaN stays NaN, Inf stays Inf, subnormals exact), as the hardware conversions do. Used by the
// CPU kernels of several op groups (csrc/cpu/packed_act.cpp, ms_norm.cpp, ff_label_rows.cpp,
// ff_linear_overlay.cpp).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#include "cpu/row_math.h"  // FFOPS_AI

namespace ffops::cpu::cvt {

typedef uint16_t __attribute__((may_alias)) u16_alias;

FFOPS_AI uint32_t f2u(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
FFOPS_AI float u2f(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

FFOPS_AI float bf16_to_float(uint16_t h) { return u2f(static_cast<uint32_t>(h) << 16); }

FFOPS_AI uint16_t float_to_bf16(float f) {
  const uint32_t u = f2u(f);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? ((u >> 16) | 0x40u) : rounded);  // NaN: keep it a (quiet) NaN
}

// IEEE half -> float (exact).
FFOPS_AI float half_to_float(uint16_t h) {
  const uint32_t shifted_exp = 0x7C00u << 13;
  uint32_t o = (static_cast<uint32_t>(h) & 0x7FFFu) << 13;
  const uint32_t e = o & shifted_exp;
  o += (127u - 15u) << 23;
  const uint32_t inf_nan = o + ((128u - 16u) << 23);
  const float sub = u2f(o + (1u << 23)) - u2f(113u << 23);  // renormalize zero / subnormal
  o = e == shifted_exp ? inf_nan : o;
  o = e == 0 ? f2u(sub) : o;
  return u2f(o | ((static_cast<uint32_t>(h) & 0x8000u) << 16));
}

// float -> IEEE half, round to nearest even.
FFOPS_AI uint16_t float_to_half(float x) {
  const uint32_t f32_inf = 255u << 23, f16_max = (127u + 16u) << 23;
  const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t u = f2u(x);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  const uint32_t special = u > f32_inf ? 0x7E00u : 0x7C00u;             // NaN / Inf or overflow
  const uint32_t sub = f2u(u2f(u) + u2f(denorm_magic)) - denorm_magic;  // subnormal or zero
  const uint32_t normal = (u + ((15u - 127u) << 23) + 0xFFFu + ((u >> 13) & 1u)) >> 13;
  uint32_t o = u < (113u << 23) ? sub : normal;
  o = u >= f16_max ? special : o;
  return static_cast<uint16_t>(o | (sign >> 16));
}

// ---- typed loads / stores at index i ------------------------------------------------------------

FFOPS_AI float ld(const float* p, int64_t i) { return p[i]; }
FFOPS_AI double ld(const double* p, int64_t i) { return p[i]; }
FFOPS_AI float ld(const c10::Half* p, int64_t i) { return half_to_float(reinterpret_cast<const u16_alias*>(p)[i]); }
FFOPS_AI float ld(const c10::BFloat16* p, int64_t i) { return bf16_to_float(reinterpret_cast<const u16_alias*>(p)[i]); }

FFOPS_AI void st(float* p, int64_t i, float v) { p[i] = v; }
FFOPS_AI void st(double* p, int64_t i, double v) { p[i] = v; }
FFOPS_AI void st(c10::Half* p, int64_t i, float v) { reinterpret_cast<u16_alias*>(p)[i] = float_to_half(v); }
FFOPS_AI void st(c10::BFloat16* p, int64_t i, float v) { reinterpret_cast<u16_alias*>(p)[i] = float_to_bf16(v); }

}  // namespace ffops::cpu::cvt
