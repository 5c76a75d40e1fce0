// Terminal progress bar with rate and ETA, drawn on stderr at most ~10 times a second.
// Contract: draws nothing when disabled (not a TTY, or --quiet); Finish() clears the line.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace qf {

class ProgressBar {
 public:
  ProgressBar(std::string label, int64_t total, bool enabled);
  ~ProgressBar();
  void Update(int64_t done);
  // The same with a note drawn after the ETA (e.g. the latest training loss).
  void Update(int64_t done, const std::string& note);
  void Finish();

  // True when both stdout and stderr are terminals: where a bar is wanted by default.
  static bool IsInteractive();

 private:
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace qf
