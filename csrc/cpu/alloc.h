// Output allocation for the large per-element results of the CPU kernels (y, dh, ...).
//
// Why: glibc serves large allocations with a fresh mmap (always above 32 MiB, and often for a few
// MiB when sizes repeat), and the first write into it takes one page fault per 4 KiB. For a
// [8192, 2000] float32 gradient that costs 3-4x the arithmetic of the kernel that fills it, every
// training step. So outputs of 4 MiB and more are
//  * mapped 2 MiB-aligned and advised as transparent huge pages (one fault per 2 MiB), and
//  * recycled: when such a tensor is freed its mapping goes to a small cache (at most
//    kCacheEntries mappings and FFOPS_CPU_CACHE_MB MiB, default 1024; 0 disables it) and the next
//    output of the same size reuses it without faulting. A training loop allocates the same sizes
//    every step, so steady state has no page faults at all.
// Smaller outputs use at::empty.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ffops::cpu {

#if defined(__linux__) && defined(MADV_HUGEPAGE)
class LargeBufferCache {
 public:
  static constexpr size_t kHuge = size_t(2) << 20;
  static constexpr size_t kMinBytes = size_t(4) << 20;
  static constexpr size_t kCacheEntries = 16;

  static LargeBufferCache& get() {
    static auto* cache = new LargeBufferCache();  // never destroyed: tensors may die at exit
    return *cache;
  }

  // A 2 MiB-aligned mapping of `bytes` (a multiple of kHuge), or nullptr.
  void* acquire(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (size_t i = 0; i < free_.size(); ++i) {
        if (free_[i].second == bytes) {
          void* p = free_[i].first;
          free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(i));
          cached_ -= bytes;
          return p;
        }
      }
    }
    return map_aligned(bytes);
  }

  void release(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (bytes <= limit_) {
        while (!free_.empty() && (free_.size() >= kCacheEntries || cached_ + bytes > limit_)) {
          munmap(free_.front().first, free_.front().second);  // evict the oldest
          cached_ -= free_.front().second;
          free_.erase(free_.begin());
        }
        free_.emplace_back(p, bytes);
        cached_ += bytes;
        return;
      }
    }
    munmap(p, bytes);
  }

 private:
  LargeBufferCache() {
    const char* env = std::getenv("FFOPS_CPU_CACHE_MB");
    limit_ = (env ? static_cast<size_t>(std::strtoull(env, nullptr, 10)) : size_t(1024)) << 20;
  }

  static void* map_aligned(size_t bytes) {
    const size_t mapped = bytes + kHuge;  // room to align
    void* raw = mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return nullptr;
    const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    const uintptr_t aligned = (start + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
    const size_t head = aligned - start;
    if (head) munmap(raw, head);
    if (mapped - head - bytes) munmap(reinterpret_cast<void*>(aligned + bytes), mapped - head - bytes);
    void* data = reinterpret_cast<void*>(aligned);
    madvise(data, bytes, MADV_HUGEPAGE);  // advisory: a kernel without THP ignores it
    return data;
  }

  std::mutex mutex_;
  std::vector<std::pair<void*, size_t>> free_;
  size_t cached_ = 0;
  size_t limit_ = 0;
};
#endif

inline at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  using Cache = LargeBufferCache;
  size_t numel = 1;
  for (const int64_t s : sizes) numel *= static_cast<size_t>(s);
  const size_t nbytes = numel * options.dtype().itemsize();
  if (nbytes >= Cache::kMinBytes) {
    const size_t bytes = (nbytes + Cache::kHuge - 1) / Cache::kHuge * Cache::kHuge;
    if (void* data = Cache::get().acquire(bytes)) {
      return at::from_blob(data, sizes, [bytes](void* p) { Cache::get().release(p, bytes); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

}  // namespace ffops::cpu
