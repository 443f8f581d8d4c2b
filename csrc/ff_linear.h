// Argument checks of the fused Forward-Forward layer ops (ff_linear_fwd / ff_linear_bwd,
// ff_label_rows, ff_linear_overlay_fwd / ff_linear_overlay_bwd; schemas in csrc/ops.cpp), shared by
// their CPU registrations (csrc/cpu/ff_linear.cpp, ff_label_rows.cpp, ff_linear_overlay.cpp) and CUDA
// registration (csrc/cuda/ff_linear_cuda.cpp). Their C++ autograd is csrc/ff_linear.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>
#include <string>

#include "common.h"

namespace ffops {

// ff_label_rows' arguments (schema in csrc/ops.cpp); returns C, the number of labels.
inline int64_t check_label_rows_args(const at::Tensor& pre, const at::Tensor& on,
                                     const std::optional<at::Tensor>& scale, const at::Tensor& label_weight,
                                     const std::optional<at::Tensor>& bias) {
  const at::ScalarType t = pre.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
              "ffops: pre must be float32, float64, float16 or bfloat16, got ", t);
  TORCH_CHECK(pre.dim() == 2 && pre.is_contiguous(), "ffops: pre must be a contiguous [batch, out] matrix, got ",
              pre.sizes(), " with strides ", pre.strides());
  check_stat(on, pre, "on");
  if (scale.has_value()) check_stat(*scale, pre, "scale");
  const int64_t out = pre.size(1);
  TORCH_CHECK(label_weight.device() == pre.device(), "ffops: label_weight must be on ", pre.device(), ", got ",
              label_weight.device());
  TORCH_CHECK(label_weight.dim() == 2 && label_weight.size(0) == out && label_weight.size(1) >= 1 &&
                  label_weight.is_contiguous(),
              "ffops: label_weight must be a contiguous [", out, ", C] matrix with C >= 1, got ", label_weight.sizes(),
              " with strides ", label_weight.strides());
  TORCH_CHECK(label_weight.scalar_type() == t, "ffops: label_weight must have the dtype of pre (", t, "), got ",
              label_weight.scalar_type());
  if (bias.has_value()) {
    TORCH_CHECK(bias->device() == pre.device(), "ffops: bias must be on ", pre.device(), ", got ", bias->device());
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == out && bias->is_contiguous() && bias->scalar_type() == t,
                "ffops: bias must be a contiguous [", out, "] vector of ", t, ", got ", bias->sizes(), " ",
                bias->scalar_type());
  }
  return label_weight.size(1);
}

// ff_linear_overlay_{fwd,bwd}'s shared arguments (schema in csrc/ops.cpp): base [B, in] contiguous,
// labels [R] int64 contiguous with R a multiple of B, on [B] and x_scale [R] (or None) of the stat
// type, 1 <= num_classes <= in, 0 <= n_pos <= R. Label values are checked at the Python boundary.
// Returns k = R / B (0 when B == 0).
inline int64_t check_overlay_args(const at::Tensor& base, const at::Tensor& labels, const at::Tensor& on,
                                  const std::optional<at::Tensor>& x_scale, int64_t num_classes, int64_t n_pos) {
  const at::ScalarType t = base.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16,
              "ffops: base must be float32, float64, float16 or bfloat16, got ", t);
  TORCH_CHECK(base.dim() == 2 && base.is_contiguous(), "ffops: base must be a contiguous [batch, in] matrix, got ",
              base.sizes(), " with strides ", base.strides());
  TORCH_CHECK(labels.device() == base.device() && labels.scalar_type() == at::kLong && labels.dim() == 1 &&
                  labels.is_contiguous(),
              "ffops: labels must be a contiguous int64 vector on ", base.device(), ", got ", labels.scalar_type(), " ",
              labels.sizes(), " on ", labels.device());
  const int64_t batch = base.size(0), rows = labels.size(0);
  TORCH_CHECK(batch == 0 ? rows == 0 : (rows >= batch && rows % batch == 0), "ffops: labels must hold k * ", batch,
              " row labels (k >= 1), got ", rows);
  check_stat(on, base, "on");
  if (x_scale.has_value()) {
    TORCH_CHECK(x_scale->device() == base.device() && x_scale->dim() == 1 && x_scale->size(0) == rows &&
                    x_scale->is_contiguous() && x_scale->scalar_type() == stat_type(t),
                "ffops: x_scale must be a contiguous vector of ", rows, " ", stat_type(t), " on ", base.device(),
                ", got ", x_scale->sizes(), " ", x_scale->scalar_type(), " on ", x_scale->device());
  }
  TORCH_CHECK(1 <= num_classes && num_classes <= base.size(1), "ffops: num_classes must be in [1, ", base.size(1),
              "], got ", num_classes);
  TORCH_CHECK(0 <= n_pos && n_pos <= rows, "ffops: n_pos must be in [0, ", rows, "], got ", n_pos);
  return batch == 0 ? 0 : rows / batch;
}

// A contiguous [rows, cols] matrix of x's dtype on x's device; rows or cols < 0: any size (named "out").
inline void check_matrix_like(const at::Tensor& t, const at::Tensor& x, int64_t rows, int64_t cols, const char* name) {
  TORCH_CHECK(t.device() == x.device(), "ffops: ", name, " must be on ", x.device(), ", got ", t.device());
  TORCH_CHECK(t.dim() == 2 && t.is_contiguous() && (rows < 0 || t.size(0) == rows) && (cols < 0 || t.size(1) == cols),
              "ffops: ", name, " must be a contiguous [", rows < 0 ? std::string("out") : std::to_string(rows), ", ",
              cols < 0 ? std::string("out") : std::to_string(cols), "] matrix, got ", t.sizes(), " with strides ",
              t.strides());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "ffops: ", name, " must have the dtype of x (", x.scalar_type(),
              "), got ", t.scalar_type());
}

// An optional contiguous vector of n values of `dtype` on x's device (bias, grad_pos_mean).
inline void check_vector(const std::optional<at::Tensor>& v, const at::Tensor& x, int64_t n, at::ScalarType dtype,
                         const char* name) {
  if (!v.has_value()) return;
  TORCH_CHECK(v->device() == x.device(), "ffops: ", name, " must be on ", x.device(), ", got ", v->device());
  TORCH_CHECK(v->dim() == 1 && v->size(0) == n && v->is_contiguous() && v->scalar_type() == dtype, "ffops: ", name,
              " must be a contiguous [", n, "] vector of ", dtype, ", got ", v->sizes(), " ", v->scalar_type());
}

// The input x [B, in] of ff_linear_{fwd,bwd}: contiguous, floating point; x_scale [B] (stat type) or
// None; 0 <= n_pos <= B.
inline void check_layer_input(const at::Tensor& x, const std::optional<at::Tensor>& x_scale, int64_t n_pos) {
  TORCH_CHECK(x.dim() == 2 && x.is_contiguous(), "ffops: x must be a contiguous [batch, in] matrix, got ", x.sizes(),
              " with strides ", x.strides());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "ffops: x must be floating point, got ", x.scalar_type());
  if (x_scale.has_value()) check_stat(*x_scale, x, "x_scale");
  TORCH_CHECK(0 <= n_pos && n_pos <= x.size(0), "ffops: n_pos must be in [0, ", x.size(0), "], got ", n_pos);
}

// ff_linear_fwd's arguments (schema in csrc/ops.cpp).
inline void check_ff_linear_fwd_args(const at::Tensor& x, const std::optional<at::Tensor>& x_scale,
                                     const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t n_pos) {
  check_layer_input(x, x_scale, n_pos);
  check_matrix_like(weight, x, -1, x.size(1), "weight");
  check_vector(bias, x, weight.size(0), x.scalar_type(), "bias");
}

// ff_linear_bwd's arguments (schema in csrc/ops.cpp).
inline void check_ff_linear_bwd_args(const at::Tensor& x, const std::optional<at::Tensor>& x_scale, const at::Tensor& h,
                                     const at::Tensor& grad_sumsq, const std::optional<at::Tensor>& grad_pos_mean,
                                     int64_t n_pos) {
  check_layer_input(x, x_scale, n_pos);
  check_matrix_like(h, x, x.size(0), -1, "h");
  check_stat(grad_sumsq, x, "grad_sumsq");
  check_vector(grad_pos_mean, x, h.size(1), stat_type(x.scalar_type()), "grad_pos_mean");
}

// ff_linear_overlay_fwd's arguments (schema in csrc/ops.cpp); returns k = R / B as check_overlay_args.
inline int64_t check_overlay_fwd_args(const at::Tensor& base, const at::Tensor& labels, const at::Tensor& on,
                                      const std::optional<at::Tensor>& x_scale, const at::Tensor& weight,
                                      const std::optional<at::Tensor>& bias, int64_t num_classes, int64_t n_pos) {
  const int64_t copies = check_overlay_args(base, labels, on, x_scale, num_classes, n_pos);
  check_matrix_like(weight, base, -1, base.size(1), "weight");
  check_vector(bias, base, weight.size(0), base.scalar_type(), "bias");
  return copies;
}

// ff_linear_overlay_bwd's arguments (schema in csrc/ops.cpp); returns k = R / B as check_overlay_args.
inline int64_t check_overlay_bwd_args(const at::Tensor& base, const at::Tensor& labels, const at::Tensor& on,
                                      const std::optional<at::Tensor>& x_scale, const at::Tensor& h,
                                      const at::Tensor& grad_sumsq, const std::optional<at::Tensor>& grad_pos_mean,
                                      int64_t num_classes, int64_t n_pos) {
  const int64_t copies = check_overlay_args(base, labels, on, x_scale, num_classes, n_pos);
  check_matrix_like(h, base, labels.size(0), -1, "h");
  check_stat(grad_sumsq, h, "grad_sumsq");
  check_vector(grad_pos_mean, base, h.size(1), stat_type(base.scalar_type()), "grad_pos_mean");
  return copies;
}

}  // namespace ffops
