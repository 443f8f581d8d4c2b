// The vector ISA (and the L2 size) that ffops' hand-sized CPU kernels run (the sparse kernels,
// csrc/cpu/sparse_kernels.cpp, and transpose_2d, csrc/cpu/transpose.cpp): each is compiled once per ISA with its own
// register blocking and picked at run time by vector_isa().
//
// vector_isa() is the best ISA this CPU supports (AVX-512 = x86-64-v4, AVX2 = x86-64-v3, else the
// baseline), lowered by the environment variable FFOPS_CPU_ISA ("avx512", "avx2" or "baseline"), read
// once: a developer on an AVX-512 machine can run and measure the AVX2 and the baseline kernels
// (asking for an ISA the CPU lacks is an error). The FF and memory kernels' multiversioned row loops
// (FFOPS_MULTIVERSION, csrc/cpu/row_math.h) are chosen by the loader and ignore the variable.
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FFOPS_X86_TARGETS 1
#define FFOPS_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
#define FFOPS_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
#endif

namespace ffops::cpu {

enum class VectorIsa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

VectorIsa vector_isa();

// "AVX-512", "AVX2" or "baseline" (the names ffops/_cpuinfo.py uses).
const char* vector_isa_name(VectorIsa isa);

// The L2 cache of one core in bytes as the OS reports it (512 KiB where it does not), read once: the
// sparse kernels size their panels to it.
int64_t l2_cache_bytes();

}  // namespace ffops::cpu
