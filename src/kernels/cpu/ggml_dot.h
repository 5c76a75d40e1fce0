// Kernels that run ggml blocks directly (Highway, dispatched at run time to the best target this
// CPU supports). Each type's block is decoded in registers, a vector of weights at a time, by one
// decoder per type; the same decoder feeds two drivers:
//   - GgmlGemv: y = x · Wᵀ for a few tokens (decoding), every decoded vector multiplied into
//     the float activations as it comes out of the block (no weight buffer);
//   - GgmlDecodeRows: rows of W decoded to fp32 (prefill tiles for the sgemm).
// Contract: GgmlDecodeRows equals the type's reference decoder (GgmlBlockType::decode) float for
// float on every target (same products and sums in the same order, no fused multiply-add); the
// GEMV sums in float with fused multiply-adds and agrees with GgmlGemvRef (reference decode, then
// a double dot product) to float rounding of Σ|w·x|.
// Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS (every
// model-file row of the ggml format table).
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/ggml_blocks.h"

namespace qf::kernels {

// A [rows, cols] matrix of blocks of `type`, rows row_bytes apart from `data`.
struct GgmlRows {
  const GgmlBlockType* type = nullptr;
  const std::byte* data = nullptr;
  size_t row_bytes = 0;
  int64_t rows = 0, cols = 0;
};

// True when the kernels here take this type.
bool GgmlKernelSupports(const GgmlBlockType& t);

// out[rows, cols] = decode(w).
void GgmlDecodeRows(const GgmlRows& w, float* out);
// y[t * ldy + r] = Σ_k decode(w)[r, k] · x[t * cols + k] for r < rows, t < m. Single-threaded.
void GgmlGemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy);
// The reference: the type's decoder, then dot products summed in double.
void GgmlGemvRef(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy);

}  // namespace qf::kernels
