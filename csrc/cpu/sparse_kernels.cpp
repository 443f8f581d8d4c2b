// The sparse kernels' entries (csrc/cpu/sparse_kernels.h): each call runs the kernels compiled for
// vector_isa() (csrc/cpu/vector_isa.h; the kernels: csrc/cpu/sparse_kernels_impl.h, one translation
// unit per ISA).
#include "cpu/sparse_kernels.h"

#include <algorithm>

#include "cpu/sparse_kernels_impl.h"
#include "cpu/vector_isa.h"

namespace ffops::cpu::sparse {

int panel_chunks(int64_t slab_rows, double l2_share) {
  const auto slab_bytes = static_cast<int64_t>(static_cast<double>(l2_cache_bytes()) * l2_share);
  const int64_t fit = slab_bytes / std::max<int64_t>(1, slab_rows * 64);
  return static_cast<int>(std::clamp<int64_t>(fit, 1, kPanelWide));
}

#ifdef FFOPS_X86_TARGETS
#define FFOPS_SPARSE_DISPATCH(FN, ...)                        \
  switch (vector_isa()) {                                     \
    case VectorIsa::kAvx512: return FN##_avx512(__VA_ARGS__); \
    case VectorIsa::kAvx2: return FN##_avx2(__VA_ARGS__);     \
    default: return FN##_baseline(__VA_ARGS__);               \
  }
#else
#define FFOPS_SPARSE_DISPATCH(FN, ...) return FN##_baseline(__VA_ARGS__);
#endif

#define FFOPS_SPARSE_KERNELS(T, I)                                                                               \
  void spmm_rows(const FwdArgs<T, I>& a, int64_t r0, int64_t r1) { FFOPS_SPARSE_DISPATCH(spmm_rows, a, r0, r1) } \
  void sddmm_cols(const BwdArgs<T, I>& a, int64_t j0, int64_t j1) { FFOPS_SPARSE_DISPATCH(sddmm_cols, a, j0, j1) }

FFOPS_SPARSE_KERNELS(float, int32_t)
FFOPS_SPARSE_KERNELS(float, int64_t)
FFOPS_SPARSE_KERNELS(double, int32_t)
FFOPS_SPARSE_KERNELS(double, int64_t)

#undef FFOPS_SPARSE_KERNELS
#undef FFOPS_SPARSE_DISPATCH

}  // namespace ffops::cpu::sparse
