// Process facts reported by commands: resident memory, split into what qforge allocated
// (RssAnon) and the file pages it has mapped (RssFile: model weights read through mmap, which
// the kernel can drop and re-read), so a user can tell what a larger model will need.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>

namespace qf {

// Peak resident set size of this process so far, in bytes (getrusage).
int64_t PeakRssBytes();

struct RssBytes {
  int64_t anon = 0;  // RssAnon: heap, stacks, private copies
  int64_t file = 0;  // RssFile + RssShmem: mapped files (the model's safetensors / GGUF pages)
};
// The current RssAnon / RssFile of /proc/self/status (zeros where it is unreadable).
RssBytes CurrentRss();
// Parses the text of /proc/PID/status (kB fields); missing fields count 0.
RssBytes ParseRss(const char* status_text);

// Highest RssAnon and RssFile seen while it lives: a background thread samples them every
// `period_ms` (and once more at Peaks()). The two peaks need not fall at the same moment; the
// process's true peak total is PeakRssBytes().
class RssWatch {
 public:
  explicit RssWatch(int period_ms = 20);
  ~RssWatch();
  RssWatch(const RssWatch&) = delete;
  RssWatch& operator=(const RssWatch&) = delete;
  RssBytes Peaks();

 private:
  void Sample();
  std::mutex mu_;
  RssBytes peak_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace qf
