// Checks of the raw-pointer contract shared by the CPU and CUDA registrations of the
// memory-saving ops (csrc/cpu/activations.cpp, csrc/cpu/norms.cpp, csrc/cuda/memory_cuda.cpp).
// Arguments were validated at the Python boundary; these guard direct calls of torch.ops.ffops.*.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <optional>

#include "ff_checks.h"

namespace ffops {

inline int64_t packed_nbytes(int64_t numel, int64_t bits) { return (numel * bits + 7) / 8; }

inline void check_float_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "ffops: ", name, " must be floating point, got ",
              t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "ffops: ", name, " must be contiguous");
}

inline void check_packed_act_args(const at::Tensor& x, const char* name, int64_t fn, at::ArrayRef<double> borders,
                                  at::ArrayRef<double> levels, int64_t bits, int64_t num_fns) {
  check_float_contiguous(x, name);
  TORCH_CHECK(fn >= 0 && fn < num_fns, "ffops: fn must be an activation id in [0, ", num_fns, "), got ", fn);
  TORCH_CHECK(bits >= 1 && bits <= 4, "ffops: bits must be in 1..4, got ", bits);
  TORCH_CHECK(static_cast<int64_t>(borders.size()) == (int64_t(1) << bits) - 1, "ffops: ", bits,
              "-bit codes need ", (int64_t(1) << bits) - 1, " borders, got ", borders.size());
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
  TORCH_CHECK(codes.device() == grad_y.device(), "ffops: codes must be on ", grad_y.device(), ", got ",
              codes.device());
  TORCH_CHECK(codes.scalar_type() == at::kByte && codes.dim() == 1 && codes.is_contiguous() &&
                  codes.numel() == packed_nbytes(grad_y.numel(), bits),
              "ffops: codes must be a contiguous uint8 vector of ", packed_nbytes(grad_y.numel(), bits),
              " bytes for ", grad_y.numel(), " elements at ", bits, " bits, got ", codes.scalar_type(), " ",
              codes.sizes());
}

// The dtype of an MS-norm output: out_dtype, or x's dtype. float64 stays float64 (and only goes to float64).
inline at::ScalarType ms_out_type(const at::Tensor& x, std::optional<at::ScalarType> out_dtype) {
  const at::ScalarType t = out_dtype.value_or(x.scalar_type());
  const bool x64 = x.scalar_type() == at::kDouble, o64 = t == at::kDouble;
  TORCH_CHECK(x64 == o64 && (t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble),
              "ffops: out_dtype must be float32, float16 or bfloat16 (float64 only for float64 x), got ", t,
              " for x of ", x.scalar_type());
  return t;
}

inline void check_ms_norm_bwd_args(const at::Tensor& grad_y, const at::Tensor& y, const at::Tensor& rstd,
                                   at::ScalarType dx_dtype) {
  check_rows(y, "y");
  check_rows(grad_y, "grad_y");
  TORCH_CHECK(y.is_contiguous(), "ffops: y must be contiguous");
  TORCH_CHECK(grad_y.device() == y.device(), "ffops: grad_y must be on ", y.device(), ", got ", grad_y.device());
  TORCH_CHECK(grad_y.sizes() == y.sizes() && grad_y.scalar_type() == y.scalar_type(), "ffops: grad_y must match y, got ",
              grad_y.sizes(), " ", grad_y.scalar_type(), " vs ", y.sizes(), " ", y.scalar_type());
  check_stat(rstd, y, "rstd");
  TORCH_CHECK((dx_dtype == at::kDouble) == (y.scalar_type() == at::kDouble) &&
                  (dx_dtype == at::kFloat || dx_dtype == at::kHalf || dx_dtype == at::kBFloat16 ||
                   dx_dtype == at::kDouble),
              "ffops: dx_dtype must be float32, float16 or bfloat16 (float64 only with float64 y), got ", dx_dtype);
}

}  // namespace ffops
