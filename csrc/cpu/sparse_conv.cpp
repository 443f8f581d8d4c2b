// The direct sparse convolution on CPU (sparse_conv2d_fwd / sparse_conv2d_bwd; schemas: csrc/ops.cpp;
// autograd: csrc/sparse_conv.cpp): a 2-D convolution whose weight [O, C, kh, kw] is one CSR matrix
// [O, C * kh * kw], run by the sparse kernels (csrc/cpu/sparse_kernels.h) without im2col.
//
// The input is laid out once, feature-major and zero-padded: every input row of the flat matrix xe
// holds the padded images one after the other, rows of `wp` values, `hs` rows per image. An output
// computed at flat position p (image n, row oh, column ow: p = (n hs + oh) wp + ow) reads every tap at
// a fixed shift of p in one row of xe, so the convolution is the sparse linear forward with nonzero k
// reading that row shifted by its tap's offset (the kernels' per-nonzero row offsets, src).
//  * Stride 1: one xe row per channel; tap (i, j) reads xe[c, p + i dh wp + j dw]. wp and hs are
//    chosen so that a row's right padding is the next row's left padding and an image's bottom
//    padding the next image's top padding: the positions that are no output (computed, then dropped)
//    cost (hs wp) / (OH OW) times the work: 1.03x at 32 x 32 and 1.15x at 14 x 14 for a 3 x 3 "same"
//    conv, against the kh kw-fold copy of the input that im2col writes and reads.
//  * Stride (sh, sw) > 1: the padded input is split into its sh sw phases (rows r = a mod sh, columns
//    q = b mod sw), each a plane of its own xe row; tap (i, j) reads phase ((i dh) mod sh, (j dw) mod
//    sw) at the shift ((i dh) div sh) wp + (j dw) div sw: a stride-1 convolution over sh sw C rows.
//
// The backward is the same walk in the positions q of xe (CSC order, grouped by xe row):
// dxe[r, q] = sum_k w_k dye[o_k, q - off_k] and dw_k = sum_q dye[o_k, q - off_k] xe[r, q], with dye
// the output gradient in the flat layout, zero at the dropped positions and in a margin of max_off
// in front (dsrc[k] = o_k ld + max_off - off_k).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/alloc.h"
#include "cpu/sparse_kernels.h"
#include "sparse_linear.h"

namespace ffops::cpu {
namespace {

constexpr const char* kFwdOp = "ffops.sparse_conv2d_fwd: ";
constexpr const char* kBwdOp = "ffops.sparse_conv2d_bwd: ";
// Flat lengths are rounded to whole vectors of either dtype (16 float32, 8 float64).
constexpr int64_t kRound = 16;

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Geometry of the flat layout (see the top of this file).
struct Layout {
  int64_t n, c, h, w;  // input
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
  int64_t oh, ow;   // output
  int64_t wp, hs;   // row stride, rows per image (of a phase plane when strided)
  int64_t span;     // n * hs * wp: the flat positions of all images
  int64_t p;        // positions computed: span rounded up to whole vectors
  int64_t max_off;  // offset of the last tap
  int64_t lq;       // length of a row of xe (and dxe): p + max_off rounded up
  int64_t taps() const { return kh * kw; }
  int64_t phases() const { return sh * sw; }  // xe rows per input channel
  // The phase of the channel's xe rows that tap `tap` reads, and the shift at which it reads it.
  int64_t tap_phase(int64_t tap) const { return (tap / kw * dh % sh) * sw + tap % kw * dw % sw; }
  int64_t tap_offset(int64_t tap) const { return tap / kw * dh / sh * wp + tap % kw * dw / sw; }
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

Layout make_layout(const char* op, const at::Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation) {
  TORCH_CHECK(x.dim() == 4, op, "x must be [N, C, H, W], got shape ", x.sizes());
  TORCH_CHECK(kernel_size.size() == 2 && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2, op,
              "kernel_size, stride, padding and dilation must have two entries each");
  TORCH_CHECK(kernel_size[0] >= 1 && kernel_size[1] >= 1, op, "kernel_size must be positive, got ", kernel_size);
  TORCH_CHECK(stride[0] >= 1 && stride[1] >= 1, op, "stride must be positive, got ", stride);
  TORCH_CHECK(padding[0] >= 0 && padding[1] >= 0, op, "padding must be non-negative, got ", padding);
  TORCH_CHECK(dilation[0] >= 1 && dilation[1] >= 1, op, "dilation must be positive, got ", dilation);
  Layout g{};
  g.n = x.size(0), g.c = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.kh = kernel_size[0], g.kw = kernel_size[1], g.sh = stride[0], g.sw = stride[1];
  g.ph = padding[0], g.pw = padding[1], g.dh = dilation[0], g.dw = dilation[1];
  const int64_t reach_h = g.h + 2 * g.ph - g.dh * (g.kh - 1), reach_w = g.w + 2 * g.pw - g.dw * (g.kw - 1);
  TORCH_CHECK(reach_h >= 1 && reach_w >= 1, op, "the kernel (", kernel_size, ", dilation ", dilation,
              ") is larger than the padded input ", x.sizes());
  g.oh = (reach_h - 1) / g.sh + 1;
  g.ow = (reach_w - 1) / g.sw + 1;
  if (g.phases() == 1) {
    g.wp = std::max(g.w + g.pw, g.ow);
    g.hs = std::max(g.h + g.ph, g.oh);
  } else {  // phase planes of the padded input, the padding inside them
    g.wp = ceil_div(g.w + 2 * g.pw, g.sw);
    g.hs = ceil_div(g.h + 2 * g.ph, g.sh);
  }
  g.span = g.n * g.hs * g.wp;
  g.p = round_up(g.span, kRound);
  g.max_off = g.tap_offset(g.taps() - 1);
  g.lq = round_up(g.p + g.max_off, kRound);
  return g;
}

// The flat layout of planes [N, C', H', W'] (NCHW-contiguous t): row c of a [C', row_len] matrix is
// `front` zeros, then per image n a block of hs rows of wp values in which plane (n, c) sits at row
// `top`, column `left`, then zeros to row_len. Every value of the matrix is written (zeros around the
// planes): no separate fill pass. One task per (c, n) block.
template <typename T>
void pack_planes(const at::Tensor& t, T* flat, int64_t row_len, int64_t front, int64_t top, int64_t left,
                 const Layout& g) {
  const int64_t planes = t.size(1), h = t.size(2), w = t.size(3), block = g.hs * g.wp;
  const T* src = t.const_data_ptr<T>();
  at::parallel_for(0, planes * g.n, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c = b / g.n, n = b % g.n;
      T* row = flat + c * row_len;
      if (n == 0) std::fill(row, row + front, T(0));
      if (n == g.n - 1) std::fill(row + front + g.n * block, row + row_len, T(0));
      T* out = row + front + n * block;
      const T* plane = src + (n * planes + c) * h * w;
      std::fill(out, out + top * g.wp + left, T(0));
      for (int64_t r = 0; r < h; ++r) {
        T* line = out + (top + r) * g.wp + left;
        std::copy(plane + r * w, plane + (r + 1) * w, line);
        // zeros up to the next line's start (the last line: to the end of the block)
        std::fill(line + w, r + 1 < h ? line + g.wp : out + block, T(0));
      }
    }
  });
}

// The inverse gather: t[n, c, :, :] = the plane at (top, left) of block n of row c (t contiguous).
template <typename T>
void unpack_planes(const T* flat, int64_t row_len, int64_t front, int64_t top, int64_t left, const Layout& g,
                   at::Tensor& t) {
  const int64_t planes = t.size(1), h = t.size(2), w = t.size(3), block = g.hs * g.wp;
  T* dst = t.mutable_data_ptr<T>();
  at::parallel_for(0, planes * g.n, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t c = b / g.n, n = b % g.n;
      const T* in = flat + c * row_len + front + n * block + top * g.wp + left;
      T* plane = dst + (n * planes + c) * h * w;
      for (int64_t r = 0; r < h; ++r) std::copy(in + r * g.wp, in + r * g.wp + w, plane + r * w);
    }
  });
}

// Calls f(phase column b, first input column q0, first phase-plane column k0) for the sw column
// phases of a padded row: input columns q0, q0 + sw, ... land at phase columns k0, k0 + 1, ...
template <typename F>
void for_column_phases(const Layout& g, const F& f) {
  for (int64_t b = 0; b < g.sw; ++b) {
    const int64_t q0 = ((b - g.pw) % g.sw + g.sw) % g.sw;  // first q with (q + pw) mod sw == b
    f(b, q0, (q0 + g.pw) / g.sw);
  }
}

// xe [C * phases, lq] of x [N, C, H, W] (contiguous): stride 1 by pack_planes; strided, each input
// row scattered to its row phase's planes, one column phase at a time. One task per (c, n): it zeroes
// its blocks of the channel's phase rows (and, for the last image, their tails) before filling them.
template <typename T>
void pack_input(const at::Tensor& x, T* xe, const Layout& g) {
  if (g.phases() == 1) return pack_planes<T>(x, xe, g.lq, 0, g.ph, g.pw, g);
  const T* src = x.const_data_ptr<T>();
  const int64_t block = g.hs * g.wp;
  at::parallel_for(0, g.c * g.n, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      const int64_t c = t / g.n, n = t % g.n;
      T* rows = xe + c * g.phases() * g.lq;
      for (int64_t p = 0; p < g.phases(); ++p) {
        T* row = rows + p * g.lq;
        std::fill(row + n * block, n == g.n - 1 ? row + g.lq : row + (n + 1) * block, T(0));
      }
      const T* plane = src + (n * g.c + c) * g.h * g.w;
      for (int64_t r = 0; r < g.h; ++r) {
        const int64_t pr = r + g.ph;  // row in the padded input
        T* out = rows + pr % g.sh * g.sw * g.lq + n * block + pr / g.sh * g.wp;
        const T* in = plane + r * g.w;
        for_column_phases(g, [&](int64_t b, int64_t q0, int64_t k0) {
          T* dst = out + b * g.lq + k0;
          for (int64_t q = q0, k = 0; q < g.w; q += g.sw, ++k) dst[k] = in[q];
        });
      }
    }
  });
}

// dx [N, C, H, W] (contiguous) from dxe [C * phases, lq]: the inverse gather of pack_input.
template <typename T>
void unpack_input(const T* dxe, const Layout& g, at::Tensor& dx) {
  if (g.phases() == 1) return unpack_planes<T>(dxe, g.lq, 0, g.ph, g.pw, g, dx);
  T* dst = dx.mutable_data_ptr<T>();
  const int64_t block = g.hs * g.wp;
  at::parallel_for(0, g.c * g.n, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t t = b0; t < b1; ++t) {
      const int64_t c = t / g.n, n = t % g.n;
      T* plane = dst + (n * g.c + c) * g.h * g.w;
      for (int64_t r = 0; r < g.h; ++r) {
        const int64_t pr = r + g.ph;
        const T* in = dxe + (c * g.phases() + pr % g.sh * g.sw) * g.lq + n * block + pr / g.sh * g.wp;
        T* out = plane + r * g.w;
        for_column_phases(g, [&](int64_t b, int64_t q0, int64_t k0) {
          const T* src = in + b * g.lq + k0;
          for (int64_t q = q0, k = 0; q < g.w; q += g.sw, ++k) out[q] = src[k];
        });
      }
    }
  });
}

// The tensors are contiguous 1-D (or [O + 1] / [C * taps + 1] pointers): the pattern was validated in
// Python (ffops/ops/sparse_linear_pattern.py) against in_features = C * kh * kw.
void check_pattern_sizes(const char* op, const at::Tensor& ptr, int64_t rows, const char* name) {
  TORCH_CHECK(ptr.size(0) == rows + 1, op, name, " must have ", rows + 1, " entries, got ", ptr.size(0));
}

at::Tensor sparse_conv2d_fwd(const at::Tensor& x, const at::Tensor& values, const at::Tensor& crow,
                             const at::Tensor& col, const at::Tensor& t_ptr, const at::Tensor& t_row,
                             const at::Tensor& t_perm, const std::optional<at::Tensor>& bias,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation) {
  const Layout g = make_layout(kFwdOp, x, kernel_size, stride, padding, dilation);
  using namespace sparse_checks;
  const at::Device device = x.device();
  check_value_dtype(x, kFwdOp, "x");
  check_values(values, kFwdOp, device);
  TORCH_CHECK(values.scalar_type() == x.scalar_type(), kFwdOp, "values must have the dtype of x (", x.scalar_type(),
              "), got ", values.scalar_type());
  const int64_t nnz = values.size(0), out_c = crow.size(0) - 1;
  check_ptr(crow, kFwdOp, "crow", nnz, device);
  check_vector(col, kFwdOp, "col", nnz, crow.scalar_type(), device);
  check_ptr(t_ptr, kFwdOp, "t_ptr", nnz, device);
  check_pattern_sizes(kFwdOp, t_ptr, g.c * g.taps(), "t_ptr (C * kh * kw + 1)");
  if (bias.has_value()) check_vector(*bias, kFwdOp, "bias", out_c, x.scalar_type(), device);

  at::Tensor y = at::empty({g.n, out_c, g.oh, g.ow}, x.options().memory_format(at::MemoryFormat::Contiguous));
  if (y.numel() == 0) return y;
  at::Tensor xe = empty_large({g.c * g.phases(), g.lq}, y.options());
  at::Tensor ye = empty_large({out_c, g.p}, y.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ffops_sparse_conv2d_fwd", [&] {
    pack_input<scalar_t>(x.contiguous(), xe.mutable_data_ptr<scalar_t>(), g);
    auto run = [&](auto index) {
      using I = decltype(index);
      const I* col_p = col.const_data_ptr<I>();
      std::vector<int64_t> src(nnz);  // nonzero k reads its channel's xe row of its tap's phase, shifted
      for (int64_t k = 0; k < nnz; ++k) {
        const int64_t c = col_p[k] / g.taps(), tap = col_p[k] % g.taps();
        src[k] = (c * g.phases() + g.tap_phase(tap)) * g.lq + g.tap_offset(tap);
      }
      const sparse::FwdArgs<scalar_t, I> a{xe.const_data_ptr<scalar_t>(),
                                           values.const_data_ptr<scalar_t>(),
                                           crow.const_data_ptr<I>(),
                                           col_p,
                                           src.data(),
                                           bias.has_value() ? bias->const_data_ptr<scalar_t>() : nullptr,
                                           ye.mutable_data_ptr<scalar_t>(),
                                           g.p,
                                           sparse::panel_chunks(g.c * g.phases(), 0.5),
                                           false,
                                           nullptr,
                                           nullptr};
      sparse::parallel_over_nnz(a.crow, out_c, g.p, [&](int64_t r0, int64_t r1) { sparse::spmm_rows(a, r0, r1); });
    };
    if (crow.scalar_type() == at::kInt) {
      run(int32_t{});
    } else {
      run(int64_t{});
    }
    unpack_planes<scalar_t>(ye.const_data_ptr<scalar_t>(), g.p, 0, 0, 0, g, y);
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor> sparse_conv2d_bwd(const at::Tensor& grad_y, const at::Tensor& x,
                                                     const at::Tensor& values, const at::Tensor& t_ptr,
                                                     const at::Tensor& t_row, const at::Tensor& t_perm,
                                                     at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                                     at::IntArrayRef padding, at::IntArrayRef dilation, bool need_dx,
                                                     bool need_dvalues) {
  const Layout g = make_layout(kBwdOp, x, kernel_size, stride, padding, dilation);
  using namespace sparse_checks;
  const at::Device device = x.device();
  check_value_dtype(x, kBwdOp, "x");
  check_values(values, kBwdOp, device);
  const at::ScalarType dtype = x.scalar_type();
  TORCH_CHECK(values.scalar_type() == dtype && grad_y.scalar_type() == dtype, kBwdOp,
              "values and grad_y must have the dtype of x (", dtype, "), got ", values.scalar_type(), " and ",
              grad_y.scalar_type());
  check_device(grad_y, kBwdOp, "grad_y", device);
  const int64_t nnz = values.size(0);
  check_ptr(t_ptr, kBwdOp, "t_ptr", nnz, device);
  check_pattern_sizes(kBwdOp, t_ptr, g.c * g.taps(), "t_ptr (C * kh * kw + 1)");
  check_vector(t_row, kBwdOp, "t_row", nnz, t_ptr.scalar_type(), device);
  check_vector(t_perm, kBwdOp, "t_perm", nnz, t_ptr.scalar_type(), device);
  TORCH_CHECK(grad_y.dim() == 4 && grad_y.size(0) == g.n && grad_y.size(2) == g.oh && grad_y.size(3) == g.ow, kBwdOp,
              "grad_y must be [", g.n, ", out_channels, ", g.oh, ", ", g.ow, "], got ", grad_y.sizes());
  const int64_t out_c = grad_y.size(1);

  const auto contiguous = x.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor dx = need_dx ? at::empty(x.sizes(), contiguous) : at::empty({0}, contiguous);
  at::Tensor dvalues = need_dvalues ? at::empty({nnz}, values.options()) : at::empty({0}, values.options());
  if (g.n == 0 || nnz == 0 || out_c == 0 || (!need_dx && !need_dvalues)) {
    dx.zero_();  // empty sums: dx over no nonzeros, dvalues over no samples
    dvalues.zero_();
    return {dx, dvalues};
  }
  // xe [C * phases, lq] as in the forward; dye [O, ld]: grad_y at its flat positions after a margin of max_off
  const int64_t ld = g.lq + g.max_off, rows = g.c * g.phases();
  at::Tensor xe = empty_large({rows, g.lq}, contiguous);
  at::Tensor dye = empty_large({out_c, ld}, contiguous);
  at::Tensor dxe = need_dx ? empty_large({rows, g.lq}, contiguous) : at::Tensor();
  at::Tensor vt = need_dx ? at::empty({nnz}, values.options()) : at::Tensor();
  at::Tensor dots = need_dvalues ? at::empty({nnz}, values.options()) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(dtype, "ffops_sparse_conv2d_bwd", [&] {
    pack_input<scalar_t>(x.contiguous(), xe.mutable_data_ptr<scalar_t>(), g);
    pack_planes<scalar_t>(grad_y.contiguous(), dye.mutable_data_ptr<scalar_t>(), ld, g.max_off, 0, 0, g);
    auto run = [&](auto index) {
      using I = decltype(index);
      const I* ptr = t_ptr.const_data_ptr<I>();
      const I* row = t_row.const_data_ptr<I>();
      const I* perm = t_perm.const_data_ptr<I>();
      // The CSC nonzeros (columns (c, tap)) regrouped by the xe row they read, (c, phase of the tap), by
      // a counting sort (stride 1: one row per channel, the order kept); each nonzero's perm (its
      // index into values) and offset into dye: its output channel's row, shifted back by its tap.
      std::vector<I> row_ptr(rows + 1, 0), row_perm(nnz);
      for (int64_t j = 0; j < g.c * g.taps(); ++j) {
        row_ptr[j / g.taps() * g.phases() + g.tap_phase(j % g.taps()) + 1] += ptr[j + 1] - ptr[j];
      }
      for (int64_t r = 0; r < rows; ++r) row_ptr[r + 1] += row_ptr[r];
      std::vector<int64_t> fill(row_ptr.begin(), row_ptr.end() - 1), dsrc(nnz);
      for (int64_t j = 0; j < g.c * g.taps(); ++j) {
        const int64_t tap = j % g.taps(), shift = g.max_off - g.tap_offset(tap);
        int64_t& next = fill[j / g.taps() * g.phases() + g.tap_phase(tap)];
        for (int64_t k = ptr[j]; k < ptr[j + 1]; ++k, ++next) {
          row_perm[next] = perm[k];
          dsrc[next] = static_cast<int64_t>(row[k]) * ld + shift;
        }
      }
      auto data = [](const at::Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
      const sparse::BwdArgs<scalar_t, I> a{dye.const_data_ptr<scalar_t>(),
                                           xe.const_data_ptr<scalar_t>(),
                                           values.const_data_ptr<scalar_t>(),
                                           row_ptr.data(),
                                           row,
                                           row_perm.data(),
                                           dsrc.data(),
                                           data(dxe),
                                           data(vt),
                                           data(dots),
                                           need_dvalues ? dvalues.mutable_data_ptr<scalar_t>() : nullptr,
                                           g.lq,
                                           sparse::panel_chunks(out_c, 1.0),
                                           false,
                                           nullptr,
                                           nullptr,
                                           nullptr};
      sparse::parallel_over_nnz(a.ptr, rows, g.lq, [&](int64_t j0, int64_t j1) { sparse::sddmm_cols(a, j0, j1); });
    };
    if (t_ptr.scalar_type() == at::kInt) {
      run(int32_t{});
    } else {
      run(int64_t{});
    }
    if (need_dx) unpack_input<scalar_t>(dxe.const_data_ptr<scalar_t>(), g, dx);
  });
  return {dx, dvalues};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("sparse_conv2d_fwd", &ffops::cpu::sparse_conv2d_fwd);
  m.impl("sparse_conv2d_bwd", &ffops::cpu::sparse_conv2d_bwd);
}
