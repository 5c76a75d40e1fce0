// FP8 decode tables built once from the dtype.h reference decoders.
// Contract: entry c equals F8E4M3ToF32(c) / F8E5M2ToF32(c) bit for bit (NaNs included).
#include "formats/fp8.h"

namespace qf {
namespace {

template <class Decode>
std::array<float, 256> BuildTable(Decode decode) {
  std::array<float, 256> table{};
  for (int c = 0; c < 256; ++c) table[static_cast<size_t>(c)] = decode(static_cast<uint8_t>(c));
  return table;
}

}  // namespace

const std::array<float, 256>& F8E4M3Values() {
  static const std::array<float, 256> table = BuildTable(F8E4M3ToF32);
  return table;
}

const std::array<float, 256>& F8E5M2Values() {
  static const std::array<float, 256> table = BuildTable(F8E5M2ToF32);
  return table;
}

}  // namespace qf
