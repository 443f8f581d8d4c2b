// Output allocation for the large per-element results of the CPU kernels (y, dh, ...).
//
// A fresh multi-MB tensor from the default CPU allocator is mmap'ed in 4 KiB pages, and the
// first write into it takes one page fault per 4 KiB: for a [8192, 2000] float32 gradient that
// costs several times the arithmetic of the kernel that fills it. Large outputs are therefore
// mapped 2 MiB-aligned and advised as transparent huge pages (where the kernel allows it), so the
// first touch costs one fault per 2 MiB. Nothing is cached: freeing the tensor unmaps it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ffops::cpu {

inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr size_t kHuge = size_t(2) << 20;
  size_t numel = 1;
  for (const int64_t s : sizes) numel *= static_cast<size_t>(s);
  const size_t nbytes = numel * options.dtype().itemsize();
  if (nbytes >= 2 * kHuge) {
    const size_t mapped = (nbytes + kHuge - 1) / kHuge * kHuge + kHuge;  // room to align
    void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw != MAP_FAILED) {
      // Keep the 2 MiB-aligned part, give the rest back.
      const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
      const uintptr_t aligned = (start + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
      const size_t head = aligned - start;
      const size_t used = (nbytes + kHuge - 1) / kHuge * kHuge;
      if (head) munmap(raw, head);
      if (mapped - head - used) munmap(reinterpret_cast<void*>(aligned + used), mapped - head - used);
      void* data = reinterpret_cast<void*>(aligned);
      madvise(data, used, MADV_HUGEPAGE);  // advisory: a kernel without THP just ignores it
      return at::from_blob(data, sizes, [used](void* p) { munmap(p, used); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

}  // namespace ffops::cpu
