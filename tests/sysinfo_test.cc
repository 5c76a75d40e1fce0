// core/sysinfo: /proc/self/status parsing and the RssWatch peaks of allocated vs mapped memory.
#include "core/sysinfo.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <vector>

#include "test_util.h"

namespace qf {
namespace {

TEST(Sysinfo, ParsesRssFieldsOfProcStatus) {
  const char* text =
      "\nName:\tqforge\nVmHWM:\t  9000 kB\nVmRSS:\t  8000 kB\nRssAnon:\t    5000 kB\n"
      "RssFile:\t    2500 kB\nRssShmem:\t     500 kB\nThreads:\t2\n";
  const RssBytes r = ParseRss(text);
  EXPECT_EQ(r.anon, 5000 * 1024);
  EXPECT_EQ(r.file, 3000 * 1024);
  EXPECT_EQ(ParseRss("\nName:\tx\n").anon, 0);
}

TEST(Sysinfo, WatchSeesAllocatedAndMappedPeaksApart) {
  constexpr size_t kBytes = size_t(64) << 20;
  const RssBytes start = CurrentRss();
  RssWatch watch(5);
  {
    std::vector<char> heap(kBytes);
    std::memset(heap.data(), 1, heap.size());  // touched: resident, anonymous
    const RssBytes mid = watch.Peaks();
    EXPECT_GE(mid.anon, start.anon + int64_t(kBytes) * 9 / 10);
  }
  // A file read through a mapping counts as file pages, not as allocated memory.
  const auto path = testing::TempDir() / "sysinfo_mapped.bin";
  {
    std::ofstream out(path, std::ios::binary);
    std::vector<char> chunk(1 << 20, 3);
    for (size_t i = 0; i < kBytes / chunk.size(); ++i)
      out.write(chunk.data(), std::streamsize(chunk.size()));
  }
  const int fd = ::open(path.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, kBytes, PROT_READ, MAP_PRIVATE, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  long sum = 0;  // read every page; the sum is checked, so the reads cannot be dropped
  for (size_t i = 0; i < kBytes; i += 4096) sum += static_cast<const volatile char*>(p)[i];
  const RssBytes peaks = watch.Peaks();
  ::munmap(p, kBytes);
  ::close(fd);
  EXPECT_EQ(sum, long(kBytes / 4096) * 3);
  EXPECT_GE(peaks.file, start.file + int64_t(kBytes) * 9 / 10);
  EXPECT_GE(PeakRssBytes(), peaks.anon);
}

}  // namespace
}  // namespace qf
