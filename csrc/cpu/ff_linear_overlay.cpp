// The first Forward-Forward layer trained on label-overlaid rows that share their images, on CPU
// (ff_linear_overlay_{fwd,bwd}; schema and math in csrc/ops.cpp; argument checks shared with CUDA:
// csrc/ff_linear.h; CUDA: csrc/cuda/ff_linear_cuda.cpp; C++ autograd: csrc/ff_linear.cpp). Supervised FF runs every
// image with its true label and with a wrong one: the rows differ only in their first C features, so
//   forward:  pre0 = base[:, C:] @ W[:, C:]^T on the B shared rows (torch's GEMM), then one pass per
//             row r = j * B + b: h[r] = relu(x_scale[r] * (pre0[b] + on[b] * W[:, labels[r]]) + bias)
//             with its sum of squares and, for positive rows, the column sums;
//   backward: one pass per shared row b over its k copies forms dpre (and grad_bias), sums
//             u = x_scale * dpre over the copies into usum[b] and adds on[b] * u into the label
//             column of its row's label; then grad_weight = usum^T @ base (GEMM on B rows) with
//             its first C columns replaced by the label columns.
// Both GEMMs take k times fewer rows than ff_linear on the materialized rows would.
// Parallel over the shared rows; column sums and label columns go to per-thread partials.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cpu/alloc.h"
#include "cpu/convert.h"
#include "cpu/row_math.h"
#include "ff_linear.h"

namespace ffops::cpu {
namespace {

// One output row: h[j] = relu(s * (p[j] + on * w[j]) + b[j]) (b may be nullptr); col[j] += h[j] when
// kCol; returns sum_j h[j]^2 of the unrounded values. relu keeps NaN (NaN < 0 is false).
template <typename T, bool kBias, bool kCol>
FFOPS_AI opmath_t<T> overlay_row(const T* p, const opmath_t<T>* w, const opmath_t<T>* b, opmath_t<T> on, opmath_t<T> s,
                                 T* h, opmath_t<T>* col, int64_t n) {
  using A = opmath_t<T>;
  A acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) {
    A v = s * (cvt::ld(p, j) + on * w[j]);
    if constexpr (kBias) v += b[j];
    v = v < A(0) ? A(0) : v;
    cvt::st(h, j, v);
    acc += v * v;
    if constexpr (kCol) col[j] += v;
  }
  return acc;
}

// One copy r of a shared row in the backward: d = q * h + [h > 0] v (v may be nullptr: no peer
// term); db += d; u = s * d; usum += u; lab += on * u (lab: the label column of labels[r]).
template <typename T, bool kPeer>
FFOPS_AI void overlay_dpre_row(const T* h, opmath_t<T> q, opmath_t<T> s, const opmath_t<T>* v, opmath_t<T> on,
                               opmath_t<T>* usum, opmath_t<T>* lab, opmath_t<T>* db, int64_t n) {
  using A = opmath_t<T>;
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const A hv = cvt::ld(h, j);
    A d = q * hv;
    if constexpr (kPeer) d += hv > A(0) ? v[j] : A(0);
    db[j] += d;
    const A u = s * d;
    usum[j] += u;
    lab[j] += on * u;
  }
}

// Shared rows [begin, end) of the forward. wt [C, out] and bias in the compute type; scale nullptr
// means 1; col: this thread's column sums over positive rows.
template <typename T>
FFOPS_AI void overlay_fwd_rows(const T* pre, const int64_t* labels, const opmath_t<T>* on, const opmath_t<T>* scale,
                               const opmath_t<T>* wt, const opmath_t<T>* bias, int64_t batch, int64_t copies,
                               int64_t n_pos, int64_t begin, int64_t end, int64_t out, T* h, opmath_t<T>* sumsq,
                               opmath_t<T>* col) {
  using A = opmath_t<T>;
  for (int64_t b = begin; b < end; ++b) {
    for (int64_t j = 0; j < copies; ++j) {
      const int64_t r = j * batch + b;
      const A s = scale ? scale[r] : A(1);
      const A* w = wt + labels[r] * out;
      T* hr = h + r * out;
      const T* p = pre + b * out;
      if (r < n_pos) {
        sumsq[r] = bias ? overlay_row<T, true, true>(p, w, bias, on[b], s, hr, col, out)
                        : overlay_row<T, false, true>(p, w, bias, on[b], s, hr, col, out);
      } else {
        sumsq[r] = bias ? overlay_row<T, true, false>(p, w, bias, on[b], s, hr, col, out)
                        : overlay_row<T, false, false>(p, w, bias, on[b], s, hr, col, out);
      }
    }
  }
}

// Shared rows [begin, end) of the backward. v: grad_pos_mean / n_pos or nullptr; usum_row: room for
// one row in the compute type; lab [C, out], db [out]: this thread's partials.
template <typename T>
FFOPS_AI void overlay_bwd_rows(const T* h, const int64_t* labels, const opmath_t<T>* on, const opmath_t<T>* scale,
                               const opmath_t<T>* gs, const opmath_t<T>* v, int64_t batch, int64_t copies,
                               int64_t n_pos, int64_t begin, int64_t end, int64_t out, opmath_t<T>* usum_row, T* usum,
                               opmath_t<T>* lab, opmath_t<T>* db) {
  using A = opmath_t<T>;
  for (int64_t b = begin; b < end; ++b) {
    std::fill(usum_row, usum_row + out, A(0));
    for (int64_t j = 0; j < copies; ++j) {
      const int64_t r = j * batch + b;
      const A s = scale ? scale[r] : A(1);
      A* lr = lab + labels[r] * out;
      if (v && r < n_pos) {
        overlay_dpre_row<T, true>(h + r * out, A(2) * gs[r], s, v, on[b], usum_row, lr, db, out);
      } else {
        overlay_dpre_row<T, false>(h + r * out, A(2) * gs[r], s, nullptr, on[b], usum_row, lr, db, out);
      }
    }
#pragma omp simd
    for (int64_t j = 0; j < out; ++j) cvt::st(usum + b * out, j, usum_row[j]);
  }
}

// One multiversioned entry point per storage type (target_clones needs plain functions).
#define FFOPS_OVERLAY_FOR(T)                                                                                           \
  FFOPS_MULTIVERSION void fwd_rows(const T* pre, const int64_t* labels, const opmath_t<T>* on,                         \
                                   const opmath_t<T>* scale, const opmath_t<T>* wt, const opmath_t<T>* bias,           \
                                   int64_t batch, int64_t copies, int64_t n_pos, int64_t begin, int64_t end,           \
                                   int64_t out, T* h, opmath_t<T>* sumsq, opmath_t<T>* col) {                          \
    overlay_fwd_rows<T>(pre, labels, on, scale, wt, bias, batch, copies, n_pos, begin, end, out, h, sumsq, col);       \
  }                                                                                                                    \
  FFOPS_MULTIVERSION void bwd_rows(const T* h, const int64_t* labels, const opmath_t<T>* on, const opmath_t<T>* scale, \
                                   const opmath_t<T>* gs, const opmath_t<T>* v, int64_t batch, int64_t copies,         \
                                   int64_t n_pos, int64_t begin, int64_t end, int64_t out, opmath_t<T>* usum_row,      \
                                   T* usum, opmath_t<T>* lab, opmath_t<T>* db) {                                       \
    overlay_bwd_rows<T>(h, labels, on, scale, gs, v, batch, copies, n_pos, begin, end, out, usum_row, usum, lab, db);  \
  }

FFOPS_OVERLAY_FOR(float)
FFOPS_OVERLAY_FOR(double)
FFOPS_OVERLAY_FOR(c10::Half)
FFOPS_OVERLAY_FOR(c10::BFloat16)
#undef FFOPS_OVERLAY_FOR

int64_t grain_for(int64_t copies, int64_t out) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, copies * out));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ff_linear_overlay_fwd(
    const at::Tensor& base, const at::Tensor& labels, const at::Tensor& on, const std::optional<at::Tensor>& x_scale,
    const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t num_classes, int64_t n_pos) {
  const int64_t copies = check_overlay_fwd_args(base, labels, on, x_scale, weight, bias, num_classes, n_pos);
  const int64_t batch = base.size(0), in = base.size(1), rows = labels.size(0), out = weight.size(0);
  const at::ScalarType st = stat_type(base.scalar_type());
  const int64_t c = num_classes;
  // The GEMM on the shared rows without their label features (strided views: no copies).
  const at::Tensor pre = in > c ? at::mm(base.narrow(1, c, in - c), weight.narrow(1, c, in - c).t()).contiguous()
                                : at::zeros({batch, out}, base.options());
  const at::Tensor wt = weight.narrow(1, 0, c).t().to(st).contiguous();  // [C, out], compute type
  const at::Tensor bias_a = bias.has_value() ? bias->to(st) : at::Tensor();
  at::Tensor h = empty_large({rows, out}, base.options());
  at::Tensor sumsq = at::empty({rows}, base.options().dtype(st));
  at::Tensor col = at::zeros({at::get_num_threads(), out}, base.options().dtype(st));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, base.scalar_type(), "ffops_ff_linear_overlay_fwd", [&] {
    using A = opmath_t<scalar_t>;
    const scalar_t* pp = pre.const_data_ptr<scalar_t>();
    const int64_t* lp = labels.const_data_ptr<int64_t>();
    const A* onp = on.const_data_ptr<A>();
    const A* sp = x_scale.has_value() ? x_scale->const_data_ptr<A>() : nullptr;
    const A* wp = wt.const_data_ptr<A>();
    const A* bp = bias_a.defined() ? bias_a.const_data_ptr<A>() : nullptr;
    scalar_t* hp = h.mutable_data_ptr<scalar_t>();
    A* ssp = sumsq.mutable_data_ptr<A>();
    A* colp = col.mutable_data_ptr<A>();
    at::parallel_for(0, batch, grain_for(copies, out), [&](int64_t begin, int64_t end) {
      fwd_rows(pp, lp, onp, sp, wp, bp, batch, copies, n_pos, begin, end, out, hp, ssp,
               colp + at::get_thread_num() * out);
    });
  });
  return {h, sumsq, col.sum(0).div_(static_cast<double>(n_pos))};
}

std::tuple<at::Tensor, at::Tensor> ff_linear_overlay_bwd(const at::Tensor& base, const at::Tensor& labels,
                                                         const at::Tensor& on, const std::optional<at::Tensor>& x_scale,
                                                         const at::Tensor& h, const at::Tensor& grad_sumsq,
                                                         const std::optional<at::Tensor>& grad_pos_mean,
                                                         int64_t num_classes, int64_t n_pos) {
  const int64_t copies =
      check_overlay_bwd_args(base, labels, on, x_scale, h, grad_sumsq, grad_pos_mean, num_classes, n_pos);
  const int64_t batch = base.size(0), out = h.size(1), c = num_classes;
  const at::ScalarType st = stat_type(base.scalar_type());
  // The peer-normalization term acts on positive rows as a per-column vector v = grad_pos_mean / n_pos.
  at::Tensor v;
  if (grad_pos_mean.has_value() && n_pos > 0) v = grad_pos_mean->div(static_cast<double>(n_pos));
  const int64_t threads = at::get_num_threads();
  at::Tensor usum = empty_large({batch, out}, base.options());
  at::Tensor lab = at::zeros({threads, c, out}, base.options().dtype(st));
  at::Tensor db = at::zeros({threads, out}, base.options().dtype(st));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, base.scalar_type(), "ffops_ff_linear_overlay_bwd", [&] {
    using A = opmath_t<scalar_t>;
    const scalar_t* hp = h.const_data_ptr<scalar_t>();
    const int64_t* lp = labels.const_data_ptr<int64_t>();
    const A* onp = on.const_data_ptr<A>();
    const A* sp = x_scale.has_value() ? x_scale->const_data_ptr<A>() : nullptr;
    const A* gp = grad_sumsq.const_data_ptr<A>();
    const A* vp = v.defined() ? v.const_data_ptr<A>() : nullptr;
    scalar_t* up = usum.mutable_data_ptr<scalar_t>();
    A* labp = lab.mutable_data_ptr<A>();
    A* dbp = db.mutable_data_ptr<A>();
    at::parallel_for(0, batch, grain_for(copies, out), [&](int64_t begin, int64_t end) {
      const int64_t t = at::get_thread_num();
      std::vector<A> usum_row(out);
      bwd_rows(hp, lp, onp, sp, gp, vp, batch, copies, n_pos, begin, end, out, usum_row.data(), up, labp + t * c * out,
               dbp + t * out);
    });
  });
  // The GEMM over all features; its first C columns (base's label features, replaced in every row)
  // are then overwritten with the label columns.
  at::Tensor grad_weight = at::mm(usum.t(), base);
  grad_weight.narrow(1, 0, c).copy_(lab.sum(0).t());
  return {grad_weight, db.sum(0).to(base.scalar_type())};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("ff_linear_overlay_fwd", &ffops::cpu::ff_linear_overlay_fwd);
  m.impl("ff_linear_overlay_bwd", &ffops::cpu::ff_linear_overlay_bwd);
}
