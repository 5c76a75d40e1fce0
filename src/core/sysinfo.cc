// Process statistics: getrusage peak, /proc/self/status RssAnon / RssFile, a sampling watch.
#include "core/sysinfo.h"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace qf {

int64_t PeakRssBytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return int64_t(ru.ru_maxrss) * 1024;  // Linux reports kilobytes
}

RssBytes ParseRss(const char* text) {
  auto field = [&](const char* key) -> int64_t {
    const char* p = std::strstr(text, key);
    if (!p) return 0;
    p += std::strlen(key);
    return std::strtoll(p, nullptr, 10) * 1024;  // "RssAnon:\t  1234 kB"
  };
  return {field("\nRssAnon:"), field("\nRssFile:") + field("\nRssShmem:")};
}

RssBytes CurrentRss() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return {};
  char buf[8192];
  buf[0] = '\n';  // fields are matched after a newline
  const size_t n = std::fread(buf + 1, 1, sizeof(buf) - 2, f);
  std::fclose(f);
  buf[n + 1] = '\0';
  return ParseRss(buf);
}

RssWatch::RssWatch(int period_ms) {
  Sample();
  thread_ = std::thread([this, period_ms] {
    while (!stop_.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(period_ms));
      Sample();
    }
  });
}

RssWatch::~RssWatch() {
  stop_ = true;
  thread_.join();
}

void RssWatch::Sample() {
  const RssBytes now = CurrentRss();
  std::lock_guard<std::mutex> lock(mu_);
  peak_.anon = std::max(peak_.anon, now.anon);
  peak_.file = std::max(peak_.file, now.file);
}

RssBytes RssWatch::Peaks() {
  Sample();
  std::lock_guard<std::mutex> lock(mu_);
  return peak_;
}

}  // namespace qf
