// Progress bar drawing (stderr, carriage return, throttled).
#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace qf {

ProgressBar::ProgressBar(std::string label, int64_t total, bool enabled)
    : label_(std::move(label)),
      total_(total),
      enabled_(enabled && total > 0),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() { Finish(); }

bool ProgressBar::IsInteractive() { return ::isatty(1) && ::isatty(2); }

void ProgressBar::Update(int64_t done) { Update(done, std::string()); }

void ProgressBar::Update(int64_t done, const std::string& note) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && done < total_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  drawn_ = true;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double frac = double(done) / double(total_);
  const double eta = done > 0 ? elapsed * (1.0 - frac) / frac : 0.0;
  constexpr int kWidth = 30;
  const int fill = int(frac * kWidth);
  std::string bar(size_t(fill), '#');
  bar.resize(kWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %lld/%lld %3.0f%% %.0fs elapsed, ETA %.0fs %s\033[K",
               label_.c_str(), bar.c_str(), (long long)done, (long long)total_, frac * 100.0,
               elapsed, eta, note.c_str());
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (!enabled_ || !drawn_) return;
  std::fprintf(stderr, "\r\033[K");
  std::fflush(stderr);
  drawn_ = false;
}

}  // namespace qf
