// The random sketch S^T a of the randomized linear op on CPU (rmm_sketch; schema in csrc/ops.cpp,
// specification ffops/reference/randomized_linear.py). S [rows, k] is never built: the rows are taken
// in blocks of R, the block's S^T [k, R] is generated into a small buffer (threads split its k rows;
// the hash of entry (r, c) is one xor and one mix32 past the per-row part, vectorized), and the
// product is accumulated by BLAS (addmm) at GEMM speed. The buffer holds about 1M values.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "randomized_linear.h"

namespace ffops::cpu {
namespace {

using namespace ffops::rmm;

template <int KIND, typename A>
void fill_block(A* tile, int64_t ld, int64_t k, int64_t r, const uint32_t* rh, uint64_t seed, A scale) {
  at::parallel_for(0, k, 16, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const uint32_t ct = col_term(c, seed);
      A* out = tile + c * ld;
#pragma omp simd
      for (int64_t i = 0; i < r; ++i) out[i] = entry<KIND, A>(mix32(rh[i] ^ ct)) * scale;
    }
  });
}

at::Tensor rmm_sketch(const at::Tensor& a, const at::Tensor& seed_t, int64_t k, int64_t kind) {
  check_rmm_sketch_args(a, seed_t, k, kind);
  const auto seed = static_cast<uint64_t>(seed_t.item<int64_t>());
  const at::ScalarType acc = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t rows = a.size(0);
  at::Tensor out = at::zeros({k, a.size(1)}, a.options().dtype(acc));
  if (rows == 0 || a.size(1) == 0) return out.to(a.scalar_type());
  const int64_t block = std::min<int64_t>(rows, std::max<int64_t>(64, (int64_t(1) << 20) / k));
  at::Tensor tile = at::empty({k, block}, a.options().dtype(acc));
  std::vector<uint32_t> rh(block);
  AT_DISPATCH_FLOATING_TYPES(acc, "ffops_rmm_sketch", [&] {
    const auto scale = static_cast<scalar_t>(1.0 / std::sqrt(static_cast<double>(k)));
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
      const int64_t r = std::min(block, rows - r0);
      for (int64_t i = 0; i < r; ++i) rh[i] = row_hash(r0 + i, seed);
      scalar_t* tp = tile.mutable_data_ptr<scalar_t>();
      if (kind == kRademacher) {
        fill_block<kRademacher>(tp, block, k, r, rh.data(), seed, scale);
      } else {
        fill_block<kGaussian>(tp, block, k, r, rh.data(), seed, scale);
      }
      out.addmm_(tile.narrow(1, 0, r), a.narrow(0, r0, r).to(acc));
    }
  });
  return out.to(a.scalar_type());
}

}  // namespace
}  // namespace ffops::cpu

TORCH_LIBRARY_IMPL(ffops, CPU, m) { m.impl("rmm_sketch", &ffops::cpu::rmm_sketch); }
