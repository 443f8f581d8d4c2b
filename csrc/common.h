// What every op group's C++ uses, on every device: the per-row statistic type and the checks of
// the raw-pointer contract shared by the CPU and CUDA registrations (csrc/cpu/*.cpp,
// csrc/cuda/*_cuda.cpp), and the helpers of the C++ autograd formulas (csrc/<op>.cpp). Arguments
// were validated at the Python boundary; the checks guard direct calls of torch.ops.ffops.* against
// a crash in a kernel. Each op group's own checks are in its header, csrc/<op>.h.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty.h>
#include <c10/core/SymBool.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

namespace ffops {

// Per-row statistics are kept in the accumulation type of h.
inline at::ScalarType stat_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

inline void check_rows(const at::Tensor& h, const char* name) {
  TORCH_CHECK(h.dim() == 2, "ffops: ", name, " must be 2-D [rows, features], got ", h.dim(), "-D");
  TORCH_CHECK(h.size(1) <= 1 || h.stride(1) == 1, "ffops: ", name,
              " must have a contiguous last dimension, got strides ", h.strides());
  TORCH_CHECK(at::isFloatingType(h.scalar_type()), "ffops: ", name, " must be floating point, got ", h.scalar_type());
}

inline void check_stat(const at::Tensor& v, const at::Tensor& h, const char* name) {
  TORCH_CHECK(v.device() == h.device(), "ffops: ", name, " must be on ", h.device(), ", got ", v.device());
  TORCH_CHECK(v.dim() == 1 && v.size(0) == h.size(0) && v.is_contiguous(), "ffops: ", name,
              " must be a contiguous vector of ", h.size(0), " per-row values, got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == stat_type(h.scalar_type()), "ffops: ", name, " must be ", stat_type(h.scalar_type()),
              ", got ", v.scalar_type());
}

inline at::Tensor empty_stat(const at::Tensor& h) {
  return at::empty({h.size(0)}, h.options().dtype(stat_type(h.scalar_type())));
}

// The rows of t [..., K] as a 2-D view [rows, K], rows the product of the leading sizes (1 for a 1-D t).
// The leading dimensions must be viewable as one: the public functions pass N-D tensors contiguous.
inline at::Tensor as_rows(const at::Tensor& t) {
  if (t.dim() == 2) return t;
  TORCH_CHECK(t.dim() >= 1, "ffops: expected a tensor with at least 1 dimension, got a 0-D tensor");
  TORCH_CHECK(t.is_contiguous(), "ffops: a tensor of ", t.dim(), " dimensions must be contiguous, got strides ",
              t.strides());
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return t.view({rows, t.size(-1)});
}

// One per-row statistic of t [..., K], shaped as t's leading dimensions (as torch's layer_norm rstd).
inline at::Tensor empty_row_stat(const at::Tensor& t) {
  return at::empty(t.sizes().slice(0, t.dim() - 1), t.options().dtype(stat_type(t.scalar_type())));
}

inline void check_float_contiguous(const at::Tensor& t, const char* name) {
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "ffops: ", name, " must be floating point, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), "ffops: ", name, " must be contiguous");
}

// ---- helpers of the C++ autograd formulas (csrc/goodness.cpp, ff_linear.cpp, packed_act.cpp, ms_norm.cpp)

// A 2-D tensor with unit stride in its last dimension, copying only if needed (or unknown: sizes and
// strides may be symbolic under torch.compile).
inline at::Tensor rows_last_contiguous(const at::Tensor& t) {
  const bool unit = TORCH_GUARD_OR_FALSE(t.sym_size(1).sym_le(1)) || TORCH_GUARD_OR_FALSE(t.sym_stride(1).sym_eq(1));
  return unit ? t : t.contiguous();
}

// A gradient for a kernel that takes rows of [..., K]: 2-D with a unit last stride, or N-D contiguous.
inline at::Tensor rows_operand(const at::Tensor& t) { return t.dim() == 2 ? rows_last_contiguous(t) : t.contiguous(); }

// An optional gradient argument of a backward kernel: t made contiguous, or None when t is undefined
// (a gradient that reached no output: set_materialize_grads(false)).
inline std::optional<at::Tensor> defined_or_none(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t.contiguous()) : std::nullopt;
}

// The typed dispatcher handle of the operator `name` ("ffops::<op>"). Call it from a function-local
// static, never at static-initialization time: the Triton set's kernels (ffops::triton_<op>) are
// registered from Python after this library loads.
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// The operator name of `op` in one of the two kernel sets that share every schema (csrc/ops.cpp):
// "ffops::<op>" (the C++ kernels) or "ffops::triton_<op>" (the Triton launchers, registered from Python).
template <bool kTriton>
std::string op_name(const char* op) {
  return std::string(kTriton ? "ffops::triton_" : "ffops::") + op;
}

}  // namespace ffops
