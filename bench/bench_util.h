// Shared by the kernel micro-benchmarks of bench/.
#pragma once

#include <algorithm>
#include <chrono>

namespace qf::bench {

// The best of `tries` timings of `reps` calls (after one untimed call), in seconds per call.
template <class Fn>
double BestSeconds(int reps, Fn&& fn, int tries = 7) {
  fn();
  double best = 1e30;
  for (int k = 0; k < tries; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) fn();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best / reps;
}

}  // namespace qf::bench
