// The sparse kernels (csrc/cpu/sparse_kernels_impl.h) for AVX2 + FMA (x86-64-v3): 32-byte vectors in
// 16 registers. Forward: panels of 8 vectors (the same 64 float32 columns as AVX-512) in one set, 8
// FMA chains, each FMA reading its x straight from memory: 8 accumulators and the broadcast weight.
// Backward: panels of 4 vectors (32 columns) with 2 dx sets: 8 accumulators, one dy vector, the weight
// and the depth-first transposing sum of the 8 dot vectors (about 4). Measured on Zen 4 with this
// ISA forced (FFOPS_CPU_ISA=avx2), 4096 x 4096 at 0.8, batch 64: 4 x 1, 4 x 2 and 8 x 1 backward
// blockings within 3 % of each other; the 2-vector panel was 10 % slower (twice the index passes).
#include "cpu/sparse_kernels_impl.h"
#include "cpu/vector_isa.h"

#ifdef FFOPS_X86_TARGETS
namespace ffops::cpu::sparse {
using Avx2Blocking = Blocking<32, 8, 1, 4, 2>;
FFOPS_SPARSE_ISA_ENTRIES(avx2, FFOPS_TARGET_AVX2, Avx2Blocking)
}  // namespace ffops::cpu::sparse
#endif
