// Storage for the large arrays every token streams (model weights), aligned to the cache line.
// std::vector's storage is only 16-byte aligned (glibc's large blocks start 16 bytes into a
// page), so with rows of a multiple of 64 bytes every 64-byte vector load of a weight row spans
// two cache lines: one thread's fp32 GEMV then reads ~31 GB/s instead of ~38 on this machine
// class (AMD EPYC, measured). Bits do not depend on it (no kernel peels by address).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace qf {

inline constexpr size_t kCacheLine = 64;

template <class T>
struct CacheLineAllocator {
  using value_type = T;
  CacheLineAllocator() = default;
  template <class U>
  CacheLineAllocator(const CacheLineAllocator<U>&) noexcept {}
  T* allocate(size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLine}));
  }
  void deallocate(T* p, size_t) noexcept { ::operator delete (p, std::align_val_t{kCacheLine}); }
  template <class U>
  bool operator==(const CacheLineAllocator<U>&) const noexcept {
    return true;
  }
};

// A std::vector whose data() is 64-byte aligned.
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace qf
