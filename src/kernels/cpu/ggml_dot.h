// Kernels that run ggml blocks directly (Highway, dispatched at run time to the best target this
// CPU supports). One decoder per type turns a block into integer levels in registers (int16
// lanes, a vector at a time) with the block's float factors; two drivers consume them:
//   - GgmlGemv (decoding, a few tokens): each token's activations are put once in fixed point
//     (x ~ dx * xq, |xq| <= GgmlGemvActivationMax(): 8191 on AVX2/AVX-512, one dx per token);
//     levels times xq are summed pairwise in int32 (vpmaddwd), k-quants' integer sub-block
//     scales applied in int16 and a whole super-block summed in int32 before its float scale,
//     and mins use float sums of x. Error: at most Σ|w| * dx / 2 from the activations'
//     rounding, plus float rounding (about 1e-6 of Σ|w x|); a 14-bit partner is 64 times finer
//     than ggml's 8-bit Q8_0/Q8_K activations. Tokens with a non-finite activation take the
//     float path (levels decoded to floats and multiplied in with FMAs), as does the scalar
//     target.
//   - GgmlDecodeRows (prefill tiles for the sgemm): levels decoded to floats.
//   - GgmlDecodeLevels (the integer prefill, q8_gemm.h): the int8 levels themselves with the
//     emit's float factors, one (a, c) per 16 weights.
// Both take interleaved rows (GgmlInterleave) of Q4_0 / Q4_K: the GEMV then runs a kernel
// where int32 lanes are rows; the decoder and the fallbacks restore 16 rows at a time.
// Contract: GgmlDecodeRows equals the type's reference decoder (GgmlBlockType::decode) float for
// float on every target (same products and sums in the same order, no FMA contraction; fp16
// signalling NaNs come out quieted); GgmlGemv is within the bound above of GgmlGemvRef
// (reference decode, then dot products summed in double).
// Types: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS (every
// model-file row of the ggml format table).
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/ggml_blocks.h"

namespace qf::kernels {

// A [rows, cols] matrix of blocks of `type`, rows row_bytes apart from `data`; interleaved: in
// groups of kGgmlInterleaveRows rows laid out by GgmlInterleave (rows a multiple of 16, the
// group of row r at data + r * row_bytes).
struct GgmlRows {
  const GgmlBlockType* type = nullptr;
  const std::byte* data = nullptr;
  size_t row_bytes = 0;
  int64_t rows = 0, cols = 0;
  bool interleaved = false;
};

// True when the kernels here take this type.
bool GgmlKernelSupports(const GgmlBlockType& t);

// The compute layout of the decoding GEMV for Q4_0 and Q4_K: 16 rows side by side, so that a
// vector's int32 lanes are rows (no per-row horizontal sums, one scale vector per block). Each
// block is cut into units (Q4_0: 9 units of 2 bytes, d then the codes; Q4_K: d and dmin of 2
// bytes, the 12 scale bytes one by one, the codes 2 bytes at a time); the unit at byte o (size s)
// of row r of a 16-row group goes to byte 16 o + r s of that group's block. A byte permutation
// of each group: same size, the same bytes (GgmlDeinterleave undoes it).
constexpr int64_t kGgmlInterleaveRows = 16;
// True when GgmlInterleave has a layout, and the GEMV a kernel, for this type.
bool GgmlInterleaves(const GgmlBlockType& t);
// rows (a multiple of 16) x cols blocks of t, as in a file -> interleaved (out: the same size).
void GgmlInterleave(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                    std::byte* out);
// The inverse.
void GgmlDeinterleave(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                      std::byte* out);

// out[rows, cols] = decode(w).
void GgmlDecodeRows(const GgmlRows& w, float* out);
// y[t * ldy + r] = Σ_k decode(w)[r, k] · x[t * cols + k] for r < rows, t < m. Single-threaded.
void GgmlGemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy);
// The rows as integer levels with float factors, for the integer prefill GEMM (q8_gemm.h):
// levels[r * cols + k] (int8), a and c per 16 weights ([r * cols / 16 + k / 16]) such that
// a * float(level) - c (c = 0 for types without a min) is GgmlDecodeRows' float, bit for bit.
// Returns the type's span (weights per distinct (a, c): 32, or 16 for Q2_K, Q3_K, Q6_K) and
// whether it has mins (c not all 0: Q4_1, Q5_1, Q2_K, Q4_K, Q5_K).
struct GgmlLevelsInfo {
  int span = 32;
  bool has_min = false;
};
GgmlLevelsInfo GgmlDecodeLevels(const GgmlRows& w, int8_t* levels, float* a, float* c);
// The largest |xq| of GgmlGemv's fixed-point activations on the target chosen now (dx = max|x| /
// this; 8191 with 16 float lanes, 4095 with 8, 2047 with 4), 0 where the GEMV runs in float.
int GgmlGemvActivationMax();
// The references: the type's decoder (GgmlBlockType::decode) on the rows as in a file
// (interleaved ones restored first); then, for the GEMV, dot products summed in double.
void GgmlDecodeRowsRef(const GgmlRows& w, float* out);
void GgmlGemvRef(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy);

}  // namespace qf::kernels
