// The first Forward-Forward layer on every (sample, label) overlay, on CPU (ff_label_rows; schema
// and math in csrc/ops.cpp; argument checks shared with CUDA: csrc/ff_linear.h; CUDA:
// csrc/cuda/ff_linear{.cu,_cuda.cpp}). The caller ran the one GEMM on the label-free input (pre [B, out]);
// this pass expands each sample into its C label rows
//   h[b*C + c, j] = relu(scale[b] * (pre[b, j] + on[b] * label_weight[j, c]) + bias[j])
// writing every output row once and summing its squares in the same loop.
//
// Parallel over samples. The label weights are transposed to [C, out] and, like the bias, converted
// to the compute type once per call; a sample's row of pre is converted once and reused by its C
// rows. So the loop over j reads contiguous vectors of the compute type and vectorizes (half and
// bfloat16 stores through csrc/cpu/convert.h).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
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

// One output row: h[j] = relu(s * (p[j] + on * w[j]) + b[j]) (b may be nullptr); returns sum_j h[j]^2
// of the unrounded values. relu keeps NaN (NaN < 0 is false), as torch.relu.
template <typename T, bool kBias>
FFOPS_AI opmath_t<T> label_row(const opmath_t<T>* p, const opmath_t<T>* w, const opmath_t<T>* b, opmath_t<T> on,
                               opmath_t<T> s, T* h, int64_t n) {
  using A = opmath_t<T>;
  A acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t j = 0; j < n; ++j) {
    A v = s * (p[j] + on * w[j]);
    if constexpr (kBias) v += b[j];
    v = v < A(0) ? A(0) : v;
    cvt::st(h, j, v);
    acc += v * v;
  }
  return acc;
}

// Samples [begin, end): rows begin*C .. end*C of h and sumsq. wt [C, out] and bias [out] (or nullptr)
// in the compute type; scale nullptr means 1. buf: room for one row of pre in the compute type
// (unused for float and double, whose rows are read in place).
template <typename T>
FFOPS_AI void label_rows_impl(const T* pre, const opmath_t<T>* on, const opmath_t<T>* scale, const opmath_t<T>* wt,
                              const opmath_t<T>* bias, int64_t begin, int64_t end, int64_t labels, int64_t out,
                              opmath_t<T>* buf, T* h, opmath_t<T>* sumsq) {
  using A = opmath_t<T>;
  for (int64_t b = begin; b < end; ++b) {
    const A* p = nullptr;
    if constexpr (std::is_same_v<T, A>) {
      p = pre + b * out;
    } else {
#pragma omp simd
      for (int64_t j = 0; j < out; ++j) buf[j] = cvt::ld(pre + b * out, j);
      p = buf;
    }
    const A s = scale ? scale[b] : A(1);
    for (int64_t c = 0; c < labels; ++c) {
      const int64_t r = b * labels + c;
      sumsq[r] = bias ? label_row<T, true>(p, wt + c * out, bias, on[b], s, h + r * out, out)
                      : label_row<T, false>(p, wt + c * out, bias, on[b], s, h + r * out, out);
    }
  }
}

// One multiversioned entry point per storage type (target_clones needs plain functions).
#define FFOPS_LABEL_ROWS_FOR(T)                                                                                  \
  FFOPS_MULTIVERSION void label_rows(const T* pre, const opmath_t<T>* on, const opmath_t<T>* scale,              \
                                     const opmath_t<T>* wt, const opmath_t<T>* bias, int64_t begin, int64_t end, \
                                     int64_t labels, int64_t out, opmath_t<T>* buf, T* h, opmath_t<T>* sumsq) {  \
    label_rows_impl<T>(pre, on, scale, wt, bias, begin, end, labels, out, buf, h, sumsq);                        \
  }

FFOPS_LABEL_ROWS_FOR(float)
FFOPS_LABEL_ROWS_FOR(double)
FFOPS_LABEL_ROWS_FOR(c10::Half)
FFOPS_LABEL_ROWS_FOR(c10::BFloat16)
#undef FFOPS_LABEL_ROWS_FOR

std::tuple<at::Tensor, at::Tensor> ff_label_rows(const at::Tensor& pre, const at::Tensor& on,
                                                 const std::optional<at::Tensor>& scale, const at::Tensor& label_weight,
                                                 const std::optional<at::Tensor>& bias) {
  const int64_t labels = check_label_rows_args(pre, on, scale, label_weight, bias);
  const int64_t batch = pre.size(0), out = pre.size(1);
  const at::ScalarType st = stat_type(pre.scalar_type());
  at::Tensor h = empty_large({batch * labels, out}, pre.options());
  at::Tensor sumsq = at::empty({batch * labels}, pre.options().dtype(st));
  if (batch == 0) return {h, sumsq};
  const at::Tensor wt = label_weight.t().to(st).contiguous();  // [C, out], compute type
  const at::Tensor bias_a = bias.has_value() ? bias->to(st) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pre.scalar_type(), "ffops_ff_label_rows", [&] {
    using A = opmath_t<scalar_t>;
    const scalar_t* pp = pre.const_data_ptr<scalar_t>();
    const A* onp = on.const_data_ptr<A>();
    const A* sp = scale.has_value() ? scale->const_data_ptr<A>() : nullptr;
    const A* wp = wt.const_data_ptr<A>();
    const A* bp = bias_a.defined() ? bias_a.const_data_ptr<A>() : nullptr;
    scalar_t* hp = h.mutable_data_ptr<scalar_t>();
    A* ssp = sumsq.mutable_data_ptr<A>();
    const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, labels * out));
    at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
      std::vector<A> buf(std::is_same_v<scalar_t, A> ? 0 : out);
      label_rows(pp, onp, sp, wp, bp, begin, end, labels, out, buf.data(), hp, ssp);
    });
  });
  return {h, sumsq};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) { m.impl("ff_label_rows", &ffops::cpu::ff_label_rows); }
