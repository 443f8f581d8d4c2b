// The sparse kernels (csrc/cpu/sparse_kernels_impl.h) for AVX-512 (x86-64-v4): 64-byte vectors in 32
// registers. Forward: panels of 4 vectors (64 float32 columns) with 2 accumulator sets, 8 FMA chains.
// Backward: 4 vectors with 2 dx sets (8 accumulators, one dy vector, the weight) and the depth-first
// transposing sum of the 16 dot vectors (about 5).
#include "cpu/sparse_kernels_impl.h"
#include "cpu/vector_isa.h"

#ifdef FFOPS_X86_TARGETS
namespace ffops::cpu::sparse {
using Avx512Blocking = Blocking<64, 4, 2, 4, 2>;
FFOPS_SPARSE_ISA_ENTRIES(avx512, FFOPS_TARGET_AVX512, Avx512Blocking)
}  // namespace ffops::cpu::sparse
#endif
