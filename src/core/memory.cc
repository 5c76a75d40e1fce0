#include "core/memory.h"

#include <sys/mman.h>

#include <cstdint>

namespace qf {

void AdviseHugePages(void* p, size_t bytes) {
  const auto begin = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) / kHugePage * kHugePage;
  const auto end = (reinterpret_cast<uintptr_t>(p) + bytes) / kHugePage * kHugePage;
  // Advice only: where THP is off or the kernel refuses, the pages stay 4 KiB and nothing else
  // changes, so the result is not checked.
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
}

}  // namespace qf
