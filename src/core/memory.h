// Storage for the large arrays every token streams (model weights).
// - Aligned to the cache line: std::vector's storage is only 16-byte aligned (glibc's large
//   blocks start 16 bytes into a page), so with rows of a multiple of 64 bytes every 64-byte
//   vector load of a weight row spans two cache lines: one thread's fp32 GEMV then reads ~31 GB/s
//   instead of ~38 on this machine class (AMD EPYC, measured).
// - Arrays of 2 MiB and more start on a 2 MiB boundary and ask Linux for transparent huge pages
//   (madvise MADV_HUGEPAGE, before anything touches them; a no-op where THP is off): decoding
//   streams all weights once per token, and with 4 KiB pages the hardware prefetchers stop at
//   every page and the TLB misses once per 4 KiB. Measured (session 21, AMD EPYC family 25
//   model 17, one thread, an fp32 GEMV sweep over llama-27m's weights): 215-230 sweeps/s on
//   4 KiB pages, 253-336 on huge pages.
// Bits do not depend on either (no kernel peels by address).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace qf {

inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kHugePage = size_t{2} << 20;

// Asks for huge pages on the whole 2 MiB pages of [p, p + bytes) (memory.cc).
void AdviseHugePages(void* p, size_t bytes);

template <class T>
struct WeightAllocator {
  using value_type = T;
  WeightAllocator() = default;
  template <class U>
  WeightAllocator(const WeightAllocator<U>&) noexcept {}
  static constexpr size_t Alignment(size_t bytes) {
    return bytes >= kHugePage ? kHugePage : kCacheLine;
  }
  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    void* p = ::operator new (bytes, std::align_val_t{Alignment(bytes)});
    if (bytes >= kHugePage) AdviseHugePages(p, bytes);
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    ::operator delete (p, std::align_val_t{Alignment(n * sizeof(T))});
  }
  template <class U>
  bool operator==(const WeightAllocator<U>&) const noexcept {
    return true;
  }
};

// A std::vector whose data() is 64-byte aligned (2 MiB and on huge pages from 2 MiB up).
template <class T>
using AlignedVector = std::vector<T, WeightAllocator<T>>;

}  // namespace qf
