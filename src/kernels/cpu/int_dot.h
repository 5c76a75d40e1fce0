// Kernels that run compressed-tensors integer weights (W2/W3/W4/W8 A16) on their codes, in the
// compute layout kernels/qgemm.h's QuantMatrix keeps (Highway, dispatched at run time):
//   - IntGemv (decoding, a few tokens): codes unpacked in registers to int16 lanes; each token's
//     activations put once in fixed point (x ~ dx * xq, |xq| <= kIntGemvActivationMax, one dx
//     per token); codes times xq summed pairwise in int32 (vpmaddwd) over a group (at most
//     kIntGemvSpan weights at a time), then scaled by the group's scale in float; the zero
//     points come in once per group as zero * Σ xq over the group (an integer). Error: at most
//     Σ|w| * dx / 2 from the activations' rounding, plus float rounding; tokens with a
//     non-finite activation, and the scalar target, take the float path (codes decoded as
//     IntDecodeRows does, multiplied in with FMAs).
//   - IntDecodeRows (prefill tiles for the sgemm): scale * (float(code) - zero) per weight,
//     equal float for float to the plain decoder (kernels/qgemm.h DequantizeRows of a
//     QuantizedTensor) on every target: one subtraction of small integers (exact), one product.
// Layouts: nibbles (codes < 16, cols a multiple of 64: byte j of each 32-byte chunk holds code j
// of the chunk's 64 in its low nibble and code j + 32 in its high one) or bytes (one code each).
#pragma once

#include <cstddef>
#include <cstdint>

namespace qf::kernels {

// Weights per 32-byte chunk of the nibble layout.
constexpr int64_t kNibbleChunk = 64;
// Largest |xq| of IntGemv's fixed-point activations, and the most weights summed in int32 before
// they go to float: at most 2048 / 8 = 256 pair sums per int32 lane (128-bit vectors; fewer with
// wider ones), each at most 2 * 255 * 8191, stay below 2^31.
constexpr int kIntGemvActivationMax = 8191;
constexpr int64_t kIntGemvSpan = 2048;

// Rows of an integer code matrix [rows, cols]: codes row_bytes apart (nibbles or bytes), scales
// and zeros [rows, cols / group] (zeros as floats; the symmetric zero 2^(bits-1) written out).
struct IntRows {
  const uint8_t* codes = nullptr;
  size_t row_bytes = 0;
  int64_t rows = 0, cols = 0, group = 0;
  bool nibbles = false;
  const float* scales = nullptr;
  const float* zeros = nullptr;
};

// y[t * ldy + r] = Σ_k scale(r, k) (code(r, k) - zero(r, k)) x[t * cols + k], r < rows, t < m.
// Single-threaded.
void IntGemv(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy);
// The fixed-point activations of IntGemv: dx[t] = max|x[t]| / kIntGemvActivationMax (1 for a
// zero row), xq = rne(x / dx); false when some x is not finite. Once per product: the GEMV on
// them (IntGemvFixed) then runs on any split of the rows.
bool IntGemvActivations(const float* x, int64_t m, int64_t k, int16_t* xq, float* dx);
void IntGemvFixed(const IntRows& w, const int16_t* xq, const float* dx, int64_t m, float* y,
                  int64_t ldy);
// out[rows, cols] = scale * (float(code) - zero).
void IntDecodeRows(const IntRows& w, float* out);
// The references: plain loops; the GEMV's dot products summed in double.
void IntDecodeRowsRef(const IntRows& w, float* out);
void IntGemvRef(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy);
// Code (r, k) of w.
inline int IntCode(const IntRows& w, int64_t r, int64_t k) {
  const uint8_t* row = w.codes + size_t(r) * w.row_bytes;
  if (!w.nibbles) return row[k];
  const int64_t c = k / kNibbleChunk, j = k % kNibbleChunk;
  const uint8_t b = row[c * (kNibbleChunk / 2) + j % (kNibbleChunk / 2)];
  return j < kNibbleChunk / 2 ? (b & 15) : (b >> 4);
}

}  // namespace qf::kernels
