// The cwc_block ops on CPU: the epilogue of a channel-wise competitive conv FF block (ReLU, 2x2
// max-pool, batch norm, class-group goodness) and its backward, on channels_last (NHWC) tensors, so
// that every pass runs along the contiguous channels. Schemas and the math: csrc/ops.cpp; the
// specification: ffops/reference/cwc_block.py; C++ autograd: csrc/cwc_block.cpp.
//
// Forward, three passes, parallel over samples:
//   1. z -> p = maxpool(relu(z)) and the window index; per-channel sums (batch statistics only)
//   2. p -> per-channel sums of (p - mean)^2 (two-pass variance: no cancellation)
//   3. p -> y = a p + b and the per-channel sums of y^2 of each sample, reduced to the groups' g
// Backward, two passes: the per-channel sums of dy and dy * xhat, then dz written once (dp at the
// window's max, zeros elsewhere). Per-sample partial sums are kept in A and added up in double.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "cpu/alloc.h"
#include "cpu/convert.h"
#include "cpu/row_math.h"
#include "cwc_block.h"

namespace ffops::cpu {
namespace {

// [n, c, h, w] with channels_last strides, from the large-output allocator.
at::Tensor empty_nhwc(int64_t n, int64_t c, int64_t h, int64_t w, const at::TensorOptions& options) {
  return empty_large({n, h, w, c}, options).permute({0, 3, 1, 2});
}

// Two per-channel sums per thread (vector 0 and 1), added up in double at the end.
struct ChannelSums {
  int64_t channels;
  std::vector<double> sums;
  explicit ChannelSums(int64_t channels)
      : channels(channels), sums(static_cast<size_t>(at::get_num_threads() * 2 * channels), 0.0) {}
  double* thread(int64_t vector) { return sums.data() + (at::get_thread_num() * 2 + vector) * channels; }
  double total(int64_t vector, int64_t c) const {
    double s = 0;
    for (int t = 0; t < at::get_num_threads(); ++t) s += sums[(t * 2 + vector) * channels + c];
    return s;
  }
};

// ---- per-sample passes: always-inline bodies, multiversioned per storage type below ----------------
// A sample is `pix` pixels of `c` contiguous channels; every inner loop runs along the channels.

// p = maxpool2x2(relu(z)) (or relu(z)) of one sample, idx = the window position of the max;
// part[k] += sum of p over the sample's pixels.
template <typename T>
FFOPS_AI void pool_relu_impl(const T* z, T* p, uint8_t* idx, opmath_t<T>* part, int64_t c, int64_t w, int64_t ho,
                             int64_t wo, bool pool) {
  using A = opmath_t<T>;
  for (int64_t oy = 0; oy < ho; ++oy) {
    for (int64_t ox = 0; ox < wo; ++ox) {
      T* out = p + (oy * wo + ox) * c;
      if (pool) {
        const T* r0 = z + (2 * oy * w + 2 * ox) * c;
        const T *r1 = r0 + c, *r2 = r0 + w * c, *r3 = r2 + c;
        uint8_t* id = idx + (oy * wo + ox) * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          // max with NaN winning (as torch's max_pool2d: v > best || isnan(v)), then relu (keeps NaN)
          const A v0 = cvt::ld(r0, k), v1 = cvt::ld(r1, k), v2 = cvt::ld(r2, k), v3 = cvt::ld(r3, k);
          const bool t1 = v1 > v0 || v1 != v1;
          A best = t1 ? v1 : v0;
          int q = t1 ? 1 : 0;
          const bool t2 = v2 > best || v2 != v2;
          best = t2 ? v2 : best;
          q = t2 ? 2 : q;
          const bool t3 = v3 > best || v3 != v3;
          best = t3 ? v3 : best;
          q = t3 ? 3 : q;
          const A v = best > A(0) || best != best ? best : A(0);
          cvt::st(out, k, v);
          id[k] = static_cast<uint8_t>(q);
          part[k] += v;
        }
      } else {
        const T* r0 = z + (oy * w + ox) * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const A x = cvt::ld(r0, k);
          const A v = x > A(0) || x != x ? x : A(0);
          cvt::st(out, k, v);
          part[k] += v;
        }
      }
    }
  }
}

// part[k] += sum over the sample of (p - mean[k])^2
template <typename T>
FFOPS_AI void sqdev_impl(const T* p, const opmath_t<T>* mean, opmath_t<T>* part, int64_t pix, int64_t c) {
  using A = opmath_t<T>;
  for (int64_t s = 0; s < pix; ++s) {
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) {
      const A d = cvt::ld(p + s * c, k) - mean[k];
      part[k] += d * d;
    }
  }
}

// y = a p + b; sq[k] += sum over the sample of y^2 (unrounded)
template <typename T>
FFOPS_AI void normalize_impl(const T* p, const opmath_t<T>* a, const opmath_t<T>* b, T* y, opmath_t<T>* sq, int64_t pix,
                             int64_t c) {
  using A = opmath_t<T>;
  for (int64_t s = 0; s < pix; ++s) {
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) {
      const A v = a[k] * cvt::ld(p + s * c, k) + b[k];
      cvt::st(y + s * c, k, v);
      sq[k] += v * v;
    }
  }
}

// dy = gk[k] * (a p + b) (+ grad_y), with gy == nullptr for no grad_y
template <typename T>
FFOPS_AI opmath_t<T> dy_at(const T* p, const T* gy, const opmath_t<T>* gk, const opmath_t<T>* a, const opmath_t<T>* b,
                           int64_t k) {
  const opmath_t<T> d = gk[k] * (a[k] * cvt::ld(p, k) + b[k]);
  return gy != nullptr ? d + cvt::ld(gy, k) : d;
}

// s_dy[k] += sum of dy, s_dyx[k] += sum of dy * (p - mean[k]) over the sample
template <typename T>
FFOPS_AI void bwd_sums_impl(const T* p, const T* gy, const opmath_t<T>* gk, const opmath_t<T>* a, const opmath_t<T>* b,
                            const opmath_t<T>* mean, opmath_t<T>* s_dy, opmath_t<T>* s_dyx, int64_t pix, int64_t c) {
  using A = opmath_t<T>;
  for (int64_t s = 0; s < pix; ++s) {
    const T* ps = p + s * c;
    const T* gs = gy != nullptr ? gy + s * c : nullptr;
#pragma omp simd
    for (int64_t k = 0; k < c; ++k) {
      const A d = dy_at(ps, gs, gk, a, b, k);
      s_dy[k] += d;
      s_dyx[k] += d * (cvt::ld(ps, k) - mean[k]);
    }
  }
}

// dz of one sample [h, w, c]: dp = p > 0 ? a dy + c0 + c1 p : 0 at the window position idx, zeros
// elsewhere (the rows / columns the pool drops are zeroed by the caller).
template <typename T>
FFOPS_AI void bwd_dz_impl(const T* p, const T* gy, const uint8_t* idx, const opmath_t<T>* gk, const opmath_t<T>* a,
                          const opmath_t<T>* b, const opmath_t<T>* c0, const opmath_t<T>* c1, T* dz, int64_t c,
                          int64_t w, int64_t ho, int64_t wo, bool pool) {
  using A = opmath_t<T>;
  for (int64_t oy = 0; oy < ho; ++oy) {
    for (int64_t ox = 0; ox < wo; ++ox) {
      const int64_t s = oy * wo + ox;
      const T* ps = p + s * c;
      const T* gs = gy != nullptr ? gy + s * c : nullptr;
      if (pool) {
        const uint8_t* id = idx + s * c;
        T* q0 = dz + (2 * oy * w + 2 * ox) * c;
        T *q1 = q0 + c, *q2 = q0 + w * c, *q3 = q2 + c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const A pv = cvt::ld(ps, k);
          const A dp = pv > A(0) ? a[k] * dy_at(ps, gs, gk, a, b, k) + c0[k] + c1[k] * pv : A(0);
          const int q = id[k];
          cvt::st(q0, k, q == 0 ? dp : A(0));
          cvt::st(q1, k, q == 1 ? dp : A(0));
          cvt::st(q2, k, q == 2 ? dp : A(0));
          cvt::st(q3, k, q == 3 ? dp : A(0));
        }
      } else {
        T* out = dz + s * c;
#pragma omp simd
        for (int64_t k = 0; k < c; ++k) {
          const A pv = cvt::ld(ps, k);
          cvt::st(out, k, pv > A(0) ? a[k] * dy_at(ps, gs, gk, a, b, k) + c0[k] + c1[k] * pv : A(0));
        }
      }
    }
  }
}

#define FFOPS_CWC_PASSES_FOR(T)                                                                                       \
  FFOPS_MULTIVERSION void pool_relu(const T* z, T* p, uint8_t* idx, opmath_t<T>* part, int64_t c, int64_t w,          \
                                    int64_t ho, int64_t wo, bool pool) {                                              \
    pool_relu_impl(z, p, idx, part, c, w, ho, wo, pool);                                                              \
  }                                                                                                                   \
  FFOPS_MULTIVERSION void sqdev(const T* p, const opmath_t<T>* mean, opmath_t<T>* part, int64_t pix, int64_t c) {     \
    sqdev_impl(p, mean, part, pix, c);                                                                                \
  }                                                                                                                   \
  FFOPS_MULTIVERSION void normalize(const T* p, const opmath_t<T>* a, const opmath_t<T>* b, T* y, opmath_t<T>* sq,    \
                                    int64_t pix, int64_t c) {                                                         \
    normalize_impl(p, a, b, y, sq, pix, c);                                                                           \
  }                                                                                                                   \
  FFOPS_MULTIVERSION void bwd_sums(const T* p, const T* gy, const opmath_t<T>* gk, const opmath_t<T>* a,              \
                                   const opmath_t<T>* b, const opmath_t<T>* mean, opmath_t<T>* s_dy,                  \
                                   opmath_t<T>* s_dyx, int64_t pix, int64_t c) {                                      \
    if (gy != nullptr) {                                                                                              \
      bwd_sums_impl(p, gy, gk, a, b, mean, s_dy, s_dyx, pix, c);                                                      \
    } else {                                                                                                          \
      bwd_sums_impl<T>(p, nullptr, gk, a, b, mean, s_dy, s_dyx, pix, c);                                              \
    }                                                                                                                 \
  }                                                                                                                   \
  FFOPS_MULTIVERSION void bwd_dz(                                                                                     \
      const T* p, const T* gy, const uint8_t* idx, const opmath_t<T>* gk, const opmath_t<T>* a, const opmath_t<T>* b, \
      const opmath_t<T>* c0, const opmath_t<T>* c1, T* dz, int64_t c, int64_t w, int64_t ho, int64_t wo, bool pool) { \
    if (gy != nullptr) {                                                                                              \
      bwd_dz_impl(p, gy, idx, gk, a, b, c0, c1, dz, c, w, ho, wo, pool);                                              \
    } else {                                                                                                          \
      bwd_dz_impl<T>(p, nullptr, idx, gk, a, b, c0, c1, dz, c, w, ho, wo, pool);                                      \
    }                                                                                                                 \
  }

FFOPS_CWC_PASSES_FOR(float)
FFOPS_CWC_PASSES_FOR(double)
FFOPS_CWC_PASSES_FOR(c10::Half)
FFOPS_CWC_PASSES_FOR(c10::BFloat16)

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> cwc_block_fwd(
    const at::Tensor& z, const at::Tensor& weight, const at::Tensor& bias, const std::optional<at::Tensor>& mean_in,
    const std::optional<at::Tensor>& var_in, int64_t num_classes, bool pool, double eps) {
  check_cwc_block_fwd_args(z, weight, bias, mean_in, var_in, num_classes);
  const int64_t n = z.size(0), c = z.size(1), h = z.size(2), w = z.size(3);
  const int64_t ho = pool ? h / 2 : h, wo = pool ? w / 2 : w, m = n * ho * wo, cg = c / num_classes;
  const bool batch_stats = !mean_in.has_value();
  at::Tensor p = empty_nhwc(n, c, ho, wo, z.options());
  at::Tensor y = empty_nhwc(n, c, ho, wo, z.options());
  at::Tensor idx =
      pool ? empty_nhwc(n, c, ho, wo, z.options().dtype(at::kByte)) : at::empty({0}, z.options().dtype(at::kByte));
  at::Tensor g = at::empty({n, num_classes}, z.options().dtype(stat_type(z.scalar_type())));
  at::Tensor mean = batch_stats ? at::empty({c}, weight.options()) : mean_in->clone();
  at::Tensor var = batch_stats ? at::empty({c}, weight.options()) : var_in->clone();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z.scalar_type(), "ffops_cwc_block_fwd", [&] {
    using A = opmath_t<scalar_t>;
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    scalar_t* pp = p.mutable_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    uint8_t* ip = pool ? idx.mutable_data_ptr<uint8_t>() : nullptr;
    A* meanp = mean.mutable_data_ptr<A>();
    A* varp = var.mutable_data_ptr<A>();
    const int64_t pix = ho * wo;
    ChannelSums sums(c);
    // Adds a per-sample sum part[0..c) into the thread's double accumulator `vector`.
    auto accumulate = [&](int vector, const std::vector<A>& part) {
      double* acc = sums.thread(vector);
      for (int64_t k = 0; k < c; ++k) acc[k] += part[k];
    };
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      std::vector<A> part(c);
      for (int64_t i = b0; i < b1; ++i) {
        std::fill(part.begin(), part.end(), A(0));
        pool_relu(zp + i * h * w * c, pp + i * pix * c, pool ? ip + i * pix * c : nullptr, part.data(), c, w, ho, wo,
                  pool);
        accumulate(0, part);
      }
    });
    if (batch_stats && m > 0) {
      for (int64_t k = 0; k < c; ++k) meanp[k] = static_cast<A>(sums.total(0, k) / m);
      at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
        std::vector<A> part(c);
        for (int64_t i = b0; i < b1; ++i) {
          std::fill(part.begin(), part.end(), A(0));
          sqdev(pp + i * pix * c, meanp, part.data(), pix, c);
          accumulate(1, part);
        }
      });
      for (int64_t k = 0; k < c; ++k) varp[k] = static_cast<A>(sums.total(1, k) / m);
    } else if (batch_stats) {  // no values: the statistics of an empty batch are NaN, as torch's
      for (int64_t k = 0; k < c; ++k) meanp[k] = varp[k] = std::numeric_limits<A>::quiet_NaN();
    }
    // y = a p + b with a = weight * rstd, b = bias - mean * a
    std::vector<A> a(c), b(c);
    const A* wp = weight.const_data_ptr<A>();
    const A* bp = bias.const_data_ptr<A>();
    for (int64_t k = 0; k < c; ++k) {
      a[k] = wp[k] / std::sqrt(varp[k] + static_cast<A>(eps));
      b[k] = bp[k] - meanp[k] * a[k];
    }
    A* gp = g.mutable_data_ptr<A>();
    const A inv_group = A(1) / static_cast<A>(cg * pix);
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      std::vector<A> sq(c);
      for (int64_t i = b0; i < b1; ++i) {
        std::fill(sq.begin(), sq.end(), A(0));
        normalize(pp + i * pix * c, a.data(), b.data(), yp + i * pix * c, sq.data(), pix, c);
        for (int64_t grp = 0; grp < num_classes; ++grp) {
          A t = 0;
          for (int64_t k = grp * cg; k < (grp + 1) * cg; ++k) t += sq[k];
          gp[i * num_classes + grp] = t * inv_group;
        }
      }
    });
  });
  return {y, g, p, idx, mean, var};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cwc_block_bwd(const std::optional<at::Tensor>& grad_y,
                                                             const std::optional<at::Tensor>& grad_g,
                                                             const at::Tensor& p, const at::Tensor& idx,
                                                             const at::Tensor& weight, const at::Tensor& bias,
                                                             const at::Tensor& mean, const at::Tensor& var,
                                                             int64_t num_classes, bool pool, bool batch_stats,
                                                             double eps, int64_t height, int64_t width) {
  check_cwc_block_bwd_args(grad_y, grad_g, p, idx, weight, bias, mean, var, num_classes, pool, height, width);
  const int64_t n = p.size(0), c = p.size(1), ho = p.size(2), wo = p.size(3), pix = ho * wo, m = n * pix;
  const int64_t cg = c / num_classes;
  at::Tensor dz = empty_nhwc(n, c, height, width, p.options());
  at::Tensor dweight = at::empty({c}, weight.options());
  at::Tensor dbias = at::empty({c}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, p.scalar_type(), "ffops_cwc_block_bwd", [&] {
    using A = opmath_t<scalar_t>;
    const scalar_t* pp = p.const_data_ptr<scalar_t>();
    const scalar_t* gyp = grad_y.has_value() ? grad_y->const_data_ptr<scalar_t>() : nullptr;
    const A* ggp = grad_g.has_value() ? grad_g->const_data_ptr<A>() : nullptr;
    const uint8_t* ip = pool ? idx.const_data_ptr<uint8_t>() : nullptr;
    const A *wp = weight.const_data_ptr<A>(), *bp = bias.const_data_ptr<A>();
    const A *meanp = mean.const_data_ptr<A>(), *varp = var.const_data_ptr<A>();
    std::vector<A> rstd(c), a(c), b(c);
    for (int64_t k = 0; k < c; ++k) {
      rstd[k] = A(1) / std::sqrt(varp[k] + static_cast<A>(eps));
      a[k] = wp[k] * rstd[k];
      b[k] = bp[k] - meanp[k] * a[k];
    }
    // the coefficient of y in dy for sample i, per channel: grad_g[i, k / cg] * 2 / (cg * pix)
    const A goodness_scale = A(2) / static_cast<A>(cg * pix);
    auto group_coef = [&](int64_t i, A* gk) {
      for (int64_t k = 0; k < c; ++k) gk[k] = ggp ? ggp[i * num_classes + k / cg] * goodness_scale : A(0);
    };
    auto grad_y_of = [&](int64_t i) { return gyp != nullptr ? gyp + i * pix * c : nullptr; };
    ChannelSums sums(c);
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      std::vector<A> gk(c), s_dy(c), s_dyx(c);
      double *tot_dy = sums.thread(0), *tot_dyx = sums.thread(1);
      for (int64_t i = b0; i < b1; ++i) {
        group_coef(i, gk.data());
        std::fill(s_dy.begin(), s_dy.end(), A(0));
        std::fill(s_dyx.begin(), s_dyx.end(), A(0));
        bwd_sums(pp + i * pix * c, grad_y_of(i), gk.data(), a.data(), b.data(), meanp, s_dy.data(), s_dyx.data(), pix,
                 c);
        for (int64_t k = 0; k < c; ++k) {
          tot_dy[k] += s_dy[k];
          tot_dyx[k] += s_dyx[k];
        }
      }
    });
    A* dwp = dweight.mutable_data_ptr<A>();
    A* dbp = dbias.mutable_data_ptr<A>();
    // dp = a dy + c0 + c1 p  (batch statistics: the mean's and variance's terms; else c0 = c1 = 0)
    std::vector<A> c0(c, A(0)), c1(c, A(0));
    for (int64_t k = 0; k < c; ++k) {
      const A sdy = static_cast<A>(sums.total(0, k));
      const A sdyx = static_cast<A>(sums.total(1, k)) * rstd[k];  // sum dy * xhat
      dbp[k] = sdy;
      dwp[k] = sdyx;
      if (batch_stats) {
        const A u = a[k] * sdyx * rstd[k] / static_cast<A>(m);
        c1[k] = -u;
        c0[k] = -a[k] * sdy / static_cast<A>(m) + u * meanp[k];
      }
    }
    scalar_t* dzp = dz.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, n, 1, [&](int64_t b0, int64_t b1) {
      std::vector<A> gk(c);
      for (int64_t i = b0; i < b1; ++i) {
        group_coef(i, gk.data());
        scalar_t* img = dzp + i * height * width * c;
        if (pool) {  // rows and columns the floor-pool drops get zeros
          if (height % 2) {
            std::memset(static_cast<void*>(img + (height - 1) * width * c), 0, width * c * sizeof(scalar_t));
          }
          if (width % 2) {
            for (int64_t r = 0; r < 2 * ho; ++r) {
              std::memset(static_cast<void*>(img + (r * width + width - 1) * c), 0, c * sizeof(scalar_t));
            }
          }
        }
        bwd_dz(pp + i * pix * c, grad_y_of(i), pool ? ip + i * pix * c : nullptr, gk.data(), a.data(), b.data(),
               c0.data(), c1.data(), img, c, width, ho, wo, pool);
      }
    });
  });
  return {dz, dweight, dbias};
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) {
  m.impl("cwc_block_fwd", &ffops::cpu::cwc_block_fwd);
  m.impl("cwc_block_bwd", &ffops::cpu::cwc_block_bwd);
}
