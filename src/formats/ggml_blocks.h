// ggml's quantized block formats (llama.cpp GGUF tensor types), one table row each, with a plain
// reference encoder and decoder per type.
// Contract: bytes bit-identical to ggml. Without an importance vector a row encodes exactly as
// ggml_quantize_chunk(type, ..., imatrix = NULL), which is what llama-quantize writes: the
// quantize_row_X_ref functions, except IQ4_NL, whose _ref variant skips the scale search that
// ggml_quantize_chunk does (IQ4_NL and IQ4_XS here search as ggml_quantize_chunk); Q8_1 and Q8_K,
// which ggml_quantize_chunk does not take, as quantize_row_q8_1_ref / quantize_row_q8_K_ref.
// With one (llama-imatrix's mean x^2 per input column), as ggml_quantize_chunk(type, ...,
// imatrix) (ggml's quantize_row_X_impl with quant_weights); Q8_0, Q8_1 and Q8_K ignore it as
// ggml does. Decoding is ggml's dequantize_row_X, float
// operation for float operation. Sources read (facts, no code taken): ggml/src/ggml-common.h
// (block layouts), ggml/src/ggml-quants.c, ggml/src/ggml.c (ggml_quantize_chunk) of
// ggerganov/llama.cpp at c392e50 (Feb 2025); tests/ggml_blocks_test.cc holds digests of ggml's
// own output for every row, with and without importance.
//
// Blocks (structs with their fields: formats/ggml_types.h), all little-endian, fp16 = IEEE half
// (round to nearest even on the way in):
//   Q4_0   32 w, 18 B, 4.5 bpw     d;          x = d * (q - 8)
//   Q4_1   32 w, 20 B, 5.0 bpw     d, m;       x = d * q + m
//   Q5_0   32 w, 22 B, 5.5 bpw     d, qh[4];   x = d * (q - 16)
//   Q5_1   32 w, 24 B, 6.0 bpw     d, m, qh;   x = d * q + m
//   Q8_0   32 w, 34 B, 8.5 bpw     d;          x = d * q (int8)
//   Q8_1   32 w, 36 B, 9.0 bpw     d, s = d * sum(q); activation partner of Q4_1/Q5_1 dots
//   Q2_K  256 w, 84 B, 2.625 bpw  16 sub-blocks of 16, 4-bit scale and min each, fp16 d, dmin
//   Q3_K  256 w, 110 B, 3.4375    16 sub-blocks of 16, 6-bit signed scales, fp16 d; x = d*s*(q-4)
//   Q4_K  256 w, 144 B, 4.5       8 sub-blocks of 32, 6-bit scale and min, fp16 d, dmin
//   Q5_K  256 w, 176 B, 5.5       as Q4_K with a fifth bit
//   Q6_K  256 w, 210 B, 6.5625    16 sub-blocks of 16, int8 scales, fp16 d; x = d*s*(q-32)
//   Q8_K  256 w, 292 B, 9.125     f32 d, int8 q, int16 sums of 16; activation partner of k-quants
//   IQ4_NL 32 w, 18 B, 4.5        d; x = d * kvalues_iq4nl[q] (a fixed non-uniform 16-level grid)
//   IQ4_XS 256 w, 136 B, 4.25     8 sub-blocks of 32 with 6-bit signed scales, same grid
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "core/result.h"

namespace qf {

// ---- codes inside a block: what a method needs to round weights to a fitted block itself ----
// Weight i of a block decodes to lattice[i].scale * level(code_i) + lattice[i].offset, where the
// lattice depends only on the block's header (fp16 scales, sub-block scales and mins) and code_i
// only on weight i's code bits: level(code) = code - zero on uniform grids, lut[code] on the
// non-uniform IQ4 grid. (Equal to the type's decoder, float for float.)
struct GgmlLattice {
  float scale = 0, offset = 0;
};
struct GgmlCodeField {  // bits [shift, shift + width) of byte `byte` of the block
  uint16_t byte;
  uint8_t shift, width;
};
struct GgmlCodeFormat {
  int bits;           // codes 0 .. 2^bits - 1
  int zero;           // uniform grids: level = code - zero
  const int8_t* lut;  // non-uniform grids: level = lut[code], ascending; null otherwise
  uint8_t flip;       // the stored bits are code ^ flip (Q8_0's two's complement int8)
  // Where weight i's code lives: 1 or 2 fields, low bits first; returns the count.
  int (*fields)(int i, GgmlCodeField* f);
  // The lattice of every weight of one block ([block] entries).
  void (*lattice)(const std::byte* block, GgmlLattice* out);
  // The block's header floats, which every lattice entry is linear in (what QAT trains):
  // scale = d · a + m · a', offset = d · o + m · o', with a, o, a', o' fixed by the block's
  // integers (sub-block scales and mins). `run`: weights sharing one lattice entry (a sub-block:
  // 16 or 32; the whole block for the legacy types); d_at: byte offset of the fp16 d; m_at: of
  // the fp16 min factor (Q4_1 / Q5_1 m, k-quant dmin), -1 where there is none.
  int run;
  int d_at, m_at;

  float Level(int code) const { return lut ? float(lut[code]) : float(code - zero); }
  float Value(GgmlLattice l, int code) const { return l.scale * Level(code) + l.offset; }
  // The code whose value is nearest x (a fixed code when the scale is 0 or not finite).
  int Nearest(GgmlLattice l, float x) const {  // inline: QAT calls it per weight and step
    const int top = (1 << bits) - 1;
    const float t = (x - l.offset) / l.scale;                          // in level units
    if (!std::isfinite(t)) return lut ? 0 : std::clamp(zero, 0, top);  // zero or NaN scale
    if (!lut) {
      const float c = std::nearbyint(t) + float(zero);
      return c <= 0.f ? 0 : c >= float(top) ? top : int(c);
    }
    // The first code of least |lut[c] − t|: the distances fall strictly, then rise (ascending
    // integer levels, correctly rounded differences), so the first c with d(c) <= d(c + 1) is it.
    int lo = 0, hi = top;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (std::fabs(float(lut[mid]) - t) <= std::fabs(float(lut[mid + 1]) - t)) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }
};

// One row of `cols` weights (a multiple of the block size); importance is null or [cols].
using GgmlEncodeRowFn = void (*)(const float* x, int64_t cols, const float* importance,
                                 std::byte* out);
using GgmlDecodeRowFn = void (*)(const std::byte* in, int64_t cols, float* out);

struct GgmlBlockType {
  std::string_view name;  // "Q4_0", "Q4_K", "IQ4_XS" (ggml's type_name, upper case)
  int id;                 // enum ggml_type of ggml.h, as stored in GGUF tensor infos
  int64_t block;          // weights per block: 32 or 256
  size_t block_bytes;     // bytes per block
  bool activation_only;   // Q8_1, Q8_K: dot-product partners, never written to model files
  GgmlEncodeRowFn encode;
  GgmlDecodeRowFn decode;
  const GgmlCodeFormat* codes;  // null for the activation-only rows
  // Bits per weight, everything in the block included (4.5 for Q4_0, 2.625 for Q2_K).
  double bits_per_weight() const { return 8.0 * double(block_bytes) / double(block); }
};

// The codes of one block -> codes[block]; and back into a block whose header is set (the code
// bits are replaced, the rest of the block is kept). t.codes must not be null.
void GgmlGetCodes(const GgmlBlockType& t, const std::byte* block, uint8_t* codes);
void GgmlSetCodes(const GgmlBlockType& t, const uint8_t* codes, std::byte* block);

// Every row, ordered by ggml type id.
std::span<const GgmlBlockType> GgmlBlockTypes();
// By name, case-insensitive ("q4_k", "Q4_K"), or by ggml type id; null when not in the table.
// (Named apart from io::FindGgmlType of io/gguf.h, which covers every GGUF tensor type.)
const GgmlBlockType* FindGgmlBlockType(std::string_view name);
const GgmlBlockType* FindGgmlBlockType(int id);

// Bytes of rows x cols weights: rows * cols / block * block_bytes; an Error when cols is not a
// positive multiple of the block or rows is negative.
Result<uint64_t> GgmlRowsBytes(const GgmlBlockType& t, int64_t rows, int64_t cols);

// x[rows, cols] -> out (rows * cols / block blocks, GgmlRowsBytes bytes), row after row.
// importance: null, or [cols] finite non-negative weights shared by every row (llama-imatrix's
// per-column mean of x^2); an Error otherwise. Zeros are taken as ggml takes them: a sub-block
// whose importance is all zero gets a NaN scale in Q2_K, Q4_K, Q5_K and IQ4_NL and zero
// weights in Q4_0, Q5_0, Q3_K, Q6_K and IQ4_XS, so callers should floor them first.
// Rows run in parallel outside an OpenMP region; the bytes do not depend on the thread count.
Status QuantizeRowsGgml(const GgmlBlockType& t, const float* x, int64_t rows, int64_t cols,
                        const float* importance, std::byte* out);
// in (GgmlRowsBytes bytes) -> out[rows, cols].
Status DequantizeRowsGgml(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                          float* out);
// out[rows, cols] = decode(encode(x)) (the weights a GGUF of type t would hold); out may equal x.
Status QuantizeDequantizeGgml(const GgmlBlockType& t, const float* x, int64_t rows, int64_t cols,
                              const float* importance, float* out);

}  // namespace qf

namespace qf::ggml {
// Packed sub-block scales, for the decoders here and the kernels that run the blocks directly
// (always inlined: the SIMD kernels' per-target functions would otherwise call them out of line).
// Q4_K / Q5_K: the 6-bit scale and min of sub-block j (0..7) from the 12 scale bytes.
[[gnu::always_inline]] inline void GetScaleMinK4(int j, const uint8_t* s, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = s[j] & 63;
    *m = s[j + 4] & 63;
  } else {
    *sc = uint8_t((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
    *m = uint8_t((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}
// All 8 at once (sc[j], m[j] for j = 0..7), four bytes at a time.
[[gnu::always_inline]] inline void GetScalesMinsK4(const uint8_t* s, uint8_t* sc, uint8_t* m) {
  const auto word = [&](int i) {
    return uint32_t(s[4 * i]) | uint32_t(s[4 * i + 1]) << 8 | uint32_t(s[4 * i + 2]) << 16 |
           uint32_t(s[4 * i + 3]) << 24;
  };
  const uint32_t u0 = word(0), u1 = word(1), u2 = word(2);
  const uint32_t out[4] = {u0 & 0x3f3f3f3fu, (u2 & 0x0f0f0f0fu) | ((u0 >> 6) & 0x03030303u) << 4,
                           u1 & 0x3f3f3f3fu,
                           ((u2 >> 4) & 0x0f0f0f0fu) | ((u1 >> 6) & 0x03030303u) << 4};
  for (int i = 0; i < 4; ++i) {
    uint8_t* dst = i < 2 ? sc + 4 * i : m + 4 * (i - 2);
    for (int k = 0; k < 4; ++k) dst[k] = uint8_t(out[i] >> (8 * k));
  }
}
// Q3_K: the signed scale (-32..31) of sub-block j (0..15) from the 12 scale bytes.
[[gnu::always_inline]] inline int ScaleQ3(int j, const uint8_t* s) {
  const int low = j < 8 ? s[j] & 0xF : s[j - 8] >> 4;
  return (low | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
}
// IQ4_NL / IQ4_XS: the 16-level non-uniform grid.
extern const int8_t kValuesIq4nl[16];
}  // namespace qf::ggml
