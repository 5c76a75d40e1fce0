// Process facts reported by commands: peak resident memory.
#pragma once

#include <cstdint>

namespace qf {

// Peak resident set size of this process so far, in bytes (getrusage).
int64_t PeakRssBytes();

}  // namespace qf
