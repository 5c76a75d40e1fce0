// The integer prefill GEMM of compressed-tensors weight-only schemes (W2/W3/W4/W8 A16): 16-bit
// activations times int16 weight levels, summed exactly in int32 per span, scaled in float per
// span. The "A16" stays 16 bits: the activations' step is 2^-15 of their span's largest value
// (an fp16 activation carries 11 significant bits).
//   Span S: 128, 64 or 32 weights, the largest that divides both the columns and the weight
//     group (A16Span); one weight scale and one activation scale per span.
//   Activations (QuantizeA16): each token's row in spans, d = max|x| / 32767 per span (a float)
//     and codes xq = round-to-nearest-even(x / d) in [-32767, 32767].
//   Weights (PackA16Weights): levels code - zero (exact small integers) and the group's scale a.
//   y[t, r] = Σ over spans j in order of: out = fma(float(Σ_span level · xq), a_j · d_j, out);
//     out starts at 0. |Σ_span level · xq| <= 128 · 255 · 32767 < 2^31.
// Every path (AVX512-VNNI vpdpwssd, portable) computes those operations in that order, so each
// returns A16GemmRef's floats bit for bit (tests). Error against the float product with the
// decoded weights: at most Σ_k |w_k| · d_span(k) / 2 from the activations' rounding, plus float
// rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/int8_gemm.h"
#include "kernels/cpu/int_dot.h"

namespace qf::kernels {

constexpr int kA16Max = 32767;
// The span for a [rows, cols] matrix with weight groups of `group` columns (cols for per-channel
// and per-tensor scales): 128, 64 or 32, or 0 when none divides both (the caller then takes the
// float tiles).
int64_t A16Span(int64_t cols, int64_t group);

struct A16Activations {
  int64_t m = 0, K = 0, span = 0;
  std::vector<int16_t> q;  // [m, K]
  std::vector<float> d;    // [m, K / span]
};
// False (out unspecified) when some x is not finite or a span's step is too small to invert:
// the caller takes the float path.
bool QuantizeA16(const float* x, int64_t m, int64_t K, int64_t span, A16Activations& out);
// The plain reference of QuantizeA16 (the same codes and steps).
bool QuantizeA16Ref(const float* x, int64_t m, int64_t K, int64_t span, A16Activations& out);

// Weight rows as levels in 16-row x 2-column blocks (block b, column pair p: 32 int16, row i's
// two levels at 2 i), with the scale per (16-row block, span): a[(b * spans + j) * 16 + i].
struct A16Weights {
  int64_t rows = 0, cols = 0, span = 0;
  std::vector<int16_t> levels;  // Int8Rows16(rows) * cols
  std::vector<float> a;
  int64_t spans() const { return cols / span; }
};
// Rows of w (int_dot.h's layouts) -> out. Rows past w.rows up to the next 16 are zeros.
void PackA16Weights(const IntRows& w, int64_t span, A16Weights& out);

// The paths this CPU runs, the portable one first; the last is the one A16Gemm takes.
std::vector<Int8Path> A16Paths();
// Whether A16Gemm has an integer instruction path here (AVX512-VNNI); elsewhere the tiles of
// decoded floats and F32Gemm are faster.
bool A16GemmFast();
// y[t * ldy + r] for r < w.rows, t < x.m.
void A16Gemm(const A16Weights& w, const A16Activations& x, float* y, int64_t ldy);
void A16GemmOn(Int8Path path, const A16Weights& w, const A16Activations& x, float* y, int64_t ldy);
// The reference: plain loops over the codes of w as IntCode reads them.
void A16GemmRef(const IntRows& w, const A16Activations& x, float* y, int64_t ldy);

}  // namespace qf::kernels
