// The sparse kernels (csrc/cpu/sparse_kernels_impl.h) for any CPU: 16-byte vectors (SSE2 on x86-64,
// NEON on ARM) in 16 registers. Forward: panels of 4 vectors with 2 accumulator sets; backward: 2
// vectors with 2 dx sets.
#include "cpu/sparse_kernels_impl.h"

namespace ffops::cpu::sparse {
using BaselineBlocking = Blocking<16, 4, 2, 2, 2>;
FFOPS_SPARSE_ISA_ENTRIES(baseline, , BaselineBlocking)
}  // namespace ffops::cpu::sparse
