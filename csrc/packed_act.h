// Argument checks of the packed-code activations (packed_act_fwd / packed_act_bwd; schemas in
// csrc/ops.cpp), shared by their CPU registration (csrc/cpu/packed_act.cpp) and CUDA registration
// (csrc/cuda/packed_act_cuda.cpp). Their C++ autograd is csrc/packed_act.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstdint>

#include "common.h"

namespace ffops {

// Number of activation ids (fn in 0 gelu .. 14 relu6; the order of ffops.reference.packed_act.ACTIVATIONS).
inline constexpr int64_t kNumActivations = 15;

// Bytes of numel codes of `bits` bits: ceil(numel * bits / 8).
inline int64_t packed_nbytes(int64_t numel, int64_t bits) { return (numel * bits + 7) / 8; }

inline void check_packed_act_args(const at::Tensor& x, const char* name, int64_t fn, at::ArrayRef<double> borders,
                                  at::ArrayRef<double> levels, int64_t bits) {
  check_float_contiguous(x, name);
  TORCH_CHECK(fn >= 0 && fn < kNumActivations, "ffops: fn must be an activation id in [0, ", kNumActivations, "), got ",
              fn);
  TORCH_CHECK(bits >= 1 && bits <= 4, "ffops: bits must be in 1..4, got ", bits);
  TORCH_CHECK(static_cast<int64_t>(borders.size()) == (int64_t(1) << bits) - 1, "ffops: ", bits, "-bit codes need ",
              (int64_t(1) << bits) - 1, " borders, got ", borders.size());
  TORCH_CHECK(static_cast<int64_t>(levels.size()) == (int64_t(1) << bits), "ffops: ", bits, "-bit codes need ",
              (int64_t(1) << bits), " levels, got ", levels.size());
  for (size_t j = 0; j < borders.size(); ++j) {
    TORCH_CHECK(!std::isnan(borders[j]) && (j == 0 || borders[j - 1] <= borders[j]),
                "ffops: borders must be ascending numbers, got ", borders);
  }
}

inline void check_packed_act_bwd_args(const at::Tensor& grad_y, const at::Tensor& codes, at::ArrayRef<double> levels,
                                      int64_t bits) {
  check_float_contiguous(grad_y, "grad_y");
  TORCH_CHECK(bits >= 1 && bits <= 4, "ffops: bits must be in 1..4, got ", bits);
  TORCH_CHECK(static_cast<int64_t>(levels.size()) == (int64_t(1) << bits), "ffops: ", bits, "-bit codes need ",
              (int64_t(1) << bits), " levels, got ", levels.size());
  TORCH_CHECK(codes.device() == grad_y.device(), "ffops: codes must be on ", grad_y.device(), ", got ", codes.device());
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 1 && codes.is_contiguous() &&
                  codes.numel() == packed_nbytes(grad_y.numel(), bits),
              "ffops: codes must be a contiguous uint8 vector of ", packed_nbytes(grad_y.numel(), bits), " bytes for ",
              grad_y.numel(), " elements at ", bits, " bits, got ", codes.scalar_type(), " ", codes.sizes());
}

}  // namespace ffops
