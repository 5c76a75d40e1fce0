// The integer prefill GEMM of ggml blocks (as llama.cpp's CPU backend multiplies them): 8-bit
// activations times int8 weight levels, summed exactly in int32 per span of weights, scaled in
// float per span.
//   Activations (QuantizeQ8): each token's row in blocks of 32 weights, one float scale per
//     block d = max|x| / 127 and codes xq = round-to-nearest-even(x / d) in [-127, 127] (ggml's
//     Q8_0 with a float scale), stored as unsigned bytes xq + 128; z = d · Σ xq per span.
//   Weights (PackLevels): GgmlDecodeLevels' int8 levels q and factors (a, c) per span S (32, or
//     16 for Q2_K / Q3_K / Q6_K): w = a · q - c.
//   y[t, r] = Σ over spans j in order of: out = fma(float(Σ_span q · xq), a_j · d, out), then
//     (types with a min) out = fma(-c_j, z_j, out); out starts at 0.
// Every path (AVX512-VNNI vpdpbusd, AVX2 vpmaddubsw, portable) computes those operations in that
// order, so each returns Q8GemmRef's floats bit for bit (tests). Error against the float product
// with the decoded weights: at most Σ_k |w_k| · d_block(k) / 2 from the activations' rounding,
// plus float rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/int8_gemm.h"

namespace qf::kernels {

constexpr int64_t kQ8Block = 32;

// x[m, K] in Q8 blocks (K a multiple of 32).
struct Q8Activations {
  int64_t m = 0, K = 0;
  std::vector<uint8_t> u;       // [m, K]: xq + 128
  std::vector<float> d;         // [m, K / 32]
  std::vector<float> z16, z32;  // [m, K / 16], [m, K / 32]: d · Σ xq over the span
  std::vector<int32_t> s16;     // [m, K / 16]: Σ xq over 16 weights
};
// False (out unspecified) when some x is not finite: the caller takes the float path.
bool QuantizeQ8(const float* x, int64_t m, int64_t K, Q8Activations& out);
// The plain reference of QuantizeQ8 (the same codes, scales and sums).
bool QuantizeQ8Ref(const float* x, int64_t m, int64_t K, Q8Activations& out);

// Weight rows as levels in int8_gemm.h's 16-row x 4-column blocks, with per-span factors laid
// out per 16-row block: [(b * spans + j) * 16 + i] for row 16 b + i and span j.
struct Q8Weights {
  int64_t rows = 0, cols = 0;
  int span = 32;
  bool has_min = false;
  std::vector<int8_t> codes;  // Int8PackedBytes(rows, cols)
  std::vector<int32_t> init;  // -128 · Σ levels over the span (the unsigned activations' offset)
  std::vector<float> a, c;
  int64_t spans() const { return cols / span; }
};
// levels[rows, cols] with a16 / c16 per 16 weights (GgmlDecodeLevels' output) -> out. c16 may be
// null (no min). Rows past `rows` up to the next 16 are zeros.
void PackQ8Weights(const int8_t* levels, const float* a16, const float* c16, int64_t rows,
                   int64_t cols, int span, Q8Weights& out);

// y[t * ldy + r] for r < w.rows, t < x.m, on the best path of Int8Paths() / a chosen one.
void Q8Gemm(const Q8Weights& w, const Q8Activations& x, float* y, int64_t ldy);
void Q8GemmOn(Int8Path path, const Q8Weights& w, const Q8Activations& x, float* y, int64_t ldy);
// The reference: plain loops over the unpacked levels and factors (as PackQ8Weights takes them).
void Q8GemmRef(const int8_t* levels, const float* a16, const float* c16, int64_t rows, int64_t cols,
               int span, const Q8Activations& x, float* y, int64_t ldy);

}  // namespace qf::kernels
