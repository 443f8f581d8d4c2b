// A fast 2-D transpose on CPU (the helper op transpose_2d, CPU only; no Triton twin):
// out = x.t().contiguous(). The sparse layer's kernels work on
// feature-major activations, so every sparse step transposes its input, output and gradients;
// ATen's transposing copy runs on one thread at about a sixth of copy speed, this one runs register
// tiles (16 x 16 with AVX-512, 8 x 8 with AVX2: unpack / shuffle networks) on all threads at ~half
// copy speed. The ISA is the sparse kernels' (vector_isa(), csrc/cpu/vector_isa.h).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "cpu/vector_isa.h"

#ifdef FFOPS_X86_TARGETS
#include <immintrin.h>
#endif

namespace ffops::cpu {
namespace {

// d[c * rows + r] = s[r * cols + c] for r in [r0, r1), c in [c0, c1)
template <typename T>
void transpose_scalar(const T* s, T* d, int64_t rows, int64_t cols, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t r = r0; r < r1; ++r) d[c * rows + r] = s[r * cols + c];
}

#ifdef FFOPS_X86_TARGETS
// One 16 x 16 float tile: rows of s (stride ls) become rows of d (stride ld). Three stages:
// interleave pairs of rows (32-bit), then pairs of pairs (64-bit), then 128-bit lanes twice.
__attribute__((target("avx512f"))) inline void transpose_tile16(const float* s, int64_t ls, float* d, int64_t ld) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; ++i) r[i] = _mm512_loadu_ps(s + i * ls);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    for (int k = 0; k < 2; ++k) {
      const __m512d a = _mm512_castps_pd(t[i + k]), b = _mm512_castps_pd(t[i + k + 2]);
      r[i + 2 * k] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
      r[i + 2 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    }
  }
  for (int i = 0; i < 16; i += 8) {
    for (int k = 0; k < 4; ++k) {
      t[i + k] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0x88);
      t[i + k + 4] = _mm512_shuffle_f32x4(r[i + k], r[i + k + 4], 0xdd);
    }
  }
  for (int k = 0; k < 8; ++k) {
    r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
    r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
  }
  for (int i = 0; i < 16; ++i) _mm512_storeu_ps(d + i * ld, r[i]);
}

// One 8 x 8 float tile: interleave pairs of rows (32-bit), pairs of pairs (64-bit), then 128-bit lanes.
__attribute__((target("avx2"))) inline void transpose_tile8(const float* s, int64_t ls, float* d, int64_t ld) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(s + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    for (int k = 0; k < 2; ++k) {
      r[i + 2 * k] = _mm256_shuffle_ps(t[i + k], t[i + k + 2], 0x44);
      r[i + 2 * k + 1] = _mm256_shuffle_ps(t[i + k], t[i + k + 2], 0xee);
    }
  }
  for (int k = 0; k < 4; ++k) {
    t[k] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x20);
    t[k + 4] = _mm256_permute2f128_ps(r[k], r[k + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(d + i * ld, t[i]);
}

// Rows [b, e) of N-row bands; full N x N tiles in registers (one call per tile: the tile is compiled
// for its ISA), the ragged edges scalar.
template <int N, void (*Tile)(const float*, int64_t, float*, int64_t)>
void transpose_bands(const float* s, float* d, int64_t rows, int64_t cols, int64_t b, int64_t e) {
  for (int64_t band = b; band < e; ++band) {
    const int64_t r0 = band * N, r1 = std::min(rows, r0 + N);
    int64_t c0 = 0;
    if (r1 - r0 == N) {
      for (; c0 + N <= cols; c0 += N) Tile(s + r0 * cols + c0, cols, d + c0 * rows + r0, rows);
    }
    transpose_scalar(s, d, rows, cols, r0, r1, c0, cols);
  }
}

// out = x^T for a contiguous float x, N-row bands over all threads.
template <int N, void (*Tile)(const float*, int64_t, float*, int64_t)>
at::Tensor transpose_tiled(const at::Tensor& x) {
  const int64_t rows = x.size(0), cols = x.size(1);
  at::Tensor out = at::empty({cols, rows}, x.options());
  const float* s = x.const_data_ptr<float>();
  float* d = out.mutable_data_ptr<float>();
  // a band of N rows is 4 N cols bytes: bands of 256 KiB per task keep the threads busy
  const int64_t grain = std::max<int64_t>(1, 64 * 1024 / (N * std::max<int64_t>(cols, 1)));
  at::parallel_for(0, (rows + N - 1) / N, grain,
                   [&](int64_t b, int64_t e) { transpose_bands<N, Tile>(s, d, rows, cols, b, e); });
  return out;
}
#endif

at::Tensor transpose_2d(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2, "ffops.transpose_2d: x must be 2-D, got ", x.dim(), "-D");
  TORCH_CHECK(x.device().is_cpu(), "ffops.transpose_2d: x must be a CPU tensor, got ", x.device());
#ifdef FFOPS_X86_TARGETS
  if (x.scalar_type() == at::kFloat && x.is_contiguous()) {
    switch (vector_isa()) {
      case VectorIsa::kAvx512: return transpose_tiled<16, transpose_tile16>(x);
      case VectorIsa::kAvx2: return transpose_tiled<8, transpose_tile8>(x);
      default: break;
    }
  }
#endif
  at::Tensor out = at::empty({x.size(1), x.size(0)}, x.options());
  return out.copy_(x.t());  // a new tensor always (x.t().contiguous() may alias x)
}

}  // namespace

TORCH_LIBRARY_IMPL(ffops, CPU, m) { m.impl("transpose_2d", &transpose_2d); }

}  // namespace ffops::cpu
