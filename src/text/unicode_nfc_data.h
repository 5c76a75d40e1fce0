// Unicode data for NFC normalization, generated into unicode_nfc_data.cc by unicode_nfc_gen.py.
// Contract: decompositions sorted by code point; combining-class ranges sorted and disjoint.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qf::text {

// One canonical decomposition: code_point -> first (+ second, 0 for a singleton).
struct NfcDecomposition {
  uint32_t code_point;
  uint32_t first;
  uint32_t second;
  uint32_t composes;  // 1 when NFC recomposes first+second into code_point (not excluded)
};

// Code points lo..hi (inclusive) have canonical combining class ccc (only non-zero listed).
struct CombiningClassRange {
  uint32_t lo;
  uint32_t hi;
  uint32_t ccc;
};

extern const NfcDecomposition kNfcDecompositions[];
extern const size_t kNfcDecompositionCount;
extern const CombiningClassRange kCombiningClassRanges[];
extern const size_t kCombiningClassRangeCount;

}  // namespace qf::text
