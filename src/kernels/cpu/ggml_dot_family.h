// Internal to kernels/cpu/ggml_dot*: what each family's file (ggml_dot_legacy.cc,
// ggml_dot_kquants.cc, ggml_dot_iq4.cc) gives ggml_dot.cc, which picks one by the family column
// of formats/ggml_types.h's list. Each entry dispatches to the best SIMD target inside.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/ggml_dot.h"

namespace qf::kernels::ggml_dot {

// GgmlInterleave's units of a block in the order they are stored, which is the order the
// interleaved GEMV reads them: (byte offset in the block as in a file, size).
struct Unit {
  size_t from, size;
};

struct Family {
  // GgmlDecodeRows and GgmlGemv for the family's types (a failed check for any other).
  void (*decode_rows)(const GgmlRows& w, float* out);
  void (*gemv)(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy);
  // The interleaved layout of type `id`; empty where the family has no interleaved kernel for it.
  std::vector<Unit> (*interleave_units)(int id);
  // GgmlDecodeLevels for the family's types.
  GgmlLevelsInfo (*decode_levels)(const GgmlRows& w, int8_t* q, float* a, float* c);
};

extern const Family kLegacyKernels, kKQuantKernels, kIQ4Kernels;

}  // namespace qf::kernels::ggml_dot
