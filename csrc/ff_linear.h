// Argument checks of the fused Forward-Forward layer ops (ff_linear_fwd / ff_linear_bwd,
// ff_label_rows, ff_linear_overlay_fwd / ff_linear_overlay_bwd; schemas in csrc/ops.cpp), shared by
// their CPU registrations (csrc/cpu/ff_linear.cpp, ff_label_rows.cpp, ff_linear_overlay.cpp) and CUDA
// registration (csrc/cuda/ff_linear_cuda.cpp). Their C++ autograd is csrc/ff_linear.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

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

}  // namespace ffops
