// vector_isa(): the CPU's best vector ISA, lowered by FFOPS_CPU_ISA (see csrc/cpu/vector_isa.h), the L2
// size, and
// the op cpu_vector_isa() that shows the choice to Python (ffops/_cpuinfo.py, the benchmarks' metadata).
#include "cpu/vector_isa.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <unistd.h>

#include <cstdlib>
#include <string>

namespace ffops::cpu {
namespace {

VectorIsa detected_isa() {
#ifdef FFOPS_X86_TARGETS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return VectorIsa::kAvx512;
  if (__builtin_cpu_supports("x86-64-v3")) return VectorIsa::kAvx2;
#endif
  return VectorIsa::kBaseline;
}

VectorIsa chosen_isa() {
  const VectorIsa best = detected_isa();
  const char* env = std::getenv("FFOPS_CPU_ISA");
  if (env == nullptr || *env == '\0') return best;
  const std::string want(env);
  VectorIsa isa;
  if (want == "avx512") {
    isa = VectorIsa::kAvx512;
  } else if (want == "avx2") {
    isa = VectorIsa::kAvx2;
  } else if (want == "baseline") {
    isa = VectorIsa::kBaseline;
  } else {
    TORCH_CHECK(false, "FFOPS_CPU_ISA must be one of avx512, avx2, baseline (or unset), got '", want, "'");
  }
  TORCH_CHECK(static_cast<int>(isa) <= static_cast<int>(best), "FFOPS_CPU_ISA=", want, " asks for ",
              vector_isa_name(isa), " kernels, but this CPU (or build) supports at most ", vector_isa_name(best));
  return isa;
}

}  // namespace

VectorIsa vector_isa() {
  static const VectorIsa isa = chosen_isa();
  return isa;
}

int64_t l2_cache_bytes() {
  static const int64_t bytes = [] {
#ifdef _SC_LEVEL2_CACHE_SIZE
    const long reported = sysconf(_SC_LEVEL2_CACHE_SIZE);  // glibc: from CPUID; 0 or -1 when unknown
    if (reported > 0) return static_cast<int64_t>(reported);
#endif
    return int64_t(512) << 10;
  }();
  return bytes;
}

const char* vector_isa_name(VectorIsa isa) {
  switch (isa) {
    case VectorIsa::kAvx512: return "AVX-512";
    case VectorIsa::kAvx2: return "AVX2";
    default: return "baseline";
  }
}

}  // namespace ffops::cpu

TORCH_LIBRARY_FRAGMENT(ffops, m) {
  m.def("cpu_vector_isa() -> str", [] { return std::string(ffops::cpu::vector_isa_name(ffops::cpu::vector_isa())); });
}
