// Argument checks of the cwc_block ops (cwc_block_fwd, cwc_block_bwd; schemas in csrc/ops.cpp) shared
// by their CPU registration (csrc/cpu/cwc_block.cpp) and CUDA registration (csrc/cuda/cwc_block_cuda.cpp).
// Their C++ autograd is csrc/cwc_block.cpp.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <optional>

#include "common.h"

namespace ffops {

// A per-channel vector [C] of the accumulation type of `like`, on its device.
inline void check_channel_vector(const at::Tensor& v, const at::Tensor& like, int64_t channels, const char* name) {
  TORCH_CHECK(v.device() == like.device(), "ffops: ", name, " must be on ", like.device(), ", got ", v.device());
  TORCH_CHECK(v.dim() == 1 && v.size(0) == channels && v.is_contiguous(), "ffops: ", name,
              " must be a contiguous vector of ", channels, " per-channel values, got ", v.sizes());
  TORCH_CHECK(v.scalar_type() == stat_type(like.scalar_type()), "ffops: ", name, " must be ",
              stat_type(like.scalar_type()), ", got ", v.scalar_type());
}

inline void check_nhwc(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "ffops: ", name, " must be 4-D [N, C, H, W], got ", t.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), "ffops: ", name, " must be floating point, got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(at::MemoryFormat::ChannelsLast), "ffops: ", name, " must be channels_last contiguous");
}

inline void check_groups(int64_t channels, int64_t num_classes) {
  TORCH_CHECK(num_classes >= 1 && channels % num_classes == 0, "ffops: num_classes (", num_classes,
              ") must divide the channels (", channels, ")");
}

inline void check_cwc_block_fwd_args(const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias,
                                     const std::optional<at::Tensor>& mean, const std::optional<at::Tensor>& var,
                                     int64_t num_classes) {
  check_nhwc(z, "z");
  const int64_t c = z.size(1);
  check_groups(c, num_classes);
  check_channel_vector(weight, z, c, "weight");
  check_channel_vector(bias, z, c, "bias");
  TORCH_CHECK(mean.has_value() == var.has_value(), "ffops: give both mean and var, or neither");
  if (mean.has_value()) {
    check_channel_vector(*mean, z, c, "mean");
    check_channel_vector(*var, z, c, "var");
  }
}

inline void check_cwc_block_bwd_args(const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_g,
                                     const at::Tensor& p, const at::Tensor& idx, const at::Tensor& weight,
                                     const at::Tensor& bias, const at::Tensor& mean, const at::Tensor& var,
                                     int64_t num_classes, bool pool, int64_t height, int64_t width) {
  check_nhwc(p, "p");
  const int64_t n = p.size(0), c = p.size(1);
  check_groups(c, num_classes);
  if (grad_y.has_value()) {
    check_nhwc(*grad_y, "grad_y");
    TORCH_CHECK(
        grad_y->sizes() == p.sizes() && grad_y->scalar_type() == p.scalar_type() && grad_y->device() == p.device(),
        "ffops: grad_y must match p");
  }
  if (grad_g.has_value()) {
    TORCH_CHECK(grad_g->device() == p.device() && grad_g->dim() == 2 && grad_g->size(0) == n &&
                    grad_g->size(1) == num_classes && grad_g->is_contiguous() &&
                    grad_g->scalar_type() == stat_type(p.scalar_type()),
                "ffops: grad_g must be a contiguous [", n, ", ", num_classes, "] ", stat_type(p.scalar_type()),
                " tensor");
  }
  if (pool) {
    TORCH_CHECK(idx.scalar_type() == at::kByte && idx.sizes() == p.sizes() && idx.device() == p.device() &&
                    idx.is_contiguous(at::MemoryFormat::ChannelsLast),
                "ffops: idx must be uint8 channels_last of p's shape");
    TORCH_CHECK(height / 2 == p.size(2) && width / 2 == p.size(3), "ffops: height, width must pool to p's size");
  } else {
    TORCH_CHECK(height == p.size(2) && width == p.size(3), "ffops: height, width must be p's size without pool");
  }
  check_channel_vector(weight, p, c, "weight");
  check_channel_vector(bias, p, c, "bias");
  check_channel_vector(mean, p, c, "mean");
  check_channel_vector(var, p, c, "var");
}

}  // namespace ffops
