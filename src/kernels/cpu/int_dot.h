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
// of the chunk's 64 in its low nibble and code j + 32 in its high one), the same nibbles
// interleaved in groups of 16 rows (IntInterleave: each row's 2-byte units side by side, so that
// one vector holds 16 rows' codes and the GEMV's int32 lanes are rows, as ggml's Q4_0x16), or
// bytes (one code each).
//   - IntGemv on interleaved rows: per 16 rows, codes unpacked in registers to int16 lanes and
//     multiplied by one pair of activations broadcast to every lane (vpmaddwd / vpdpwssd), the
//     zero points subtracted once per group as zero * Σ xq; the same activations, error bound and
//     float path as above.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace qf::kernels {

// Weights per 32-byte chunk of the nibble layout.
constexpr int64_t kNibbleChunk = 64;
// Largest |xq| of IntGemv's fixed-point activations, and the most weights summed in int32 before
// they go to float: at most 2048 / 8 = 256 pair sums per int32 lane (128-bit vectors; fewer with
// wider ones), each at most 2 * 255 * 8191, stay below 2^31.
constexpr int kIntGemvActivationMax = 8191;
constexpr int64_t kIntGemvSpan = 2048;
// Rows per group of the interleaved nibble layout.
constexpr int64_t kIntInterleaveRows = 16;

// Rows of an integer code matrix [rows, cols]: codes row_bytes apart (nibbles or bytes), scales
// and zeros (zeros as floats; the symmetric zero 2^(bits-1) written out) per row and group at
// Param(r, g): [rows, cols / group], or for interleaved rows [rows / 16, cols / group, 16] (the
// 16 rows' parameters of a group side by side, as the GEMV's lanes take them).
struct IntRows {
  const uint8_t* codes = nullptr;
  size_t row_bytes = 0;
  int64_t rows = 0, cols = 0, group = 0;
  bool nibbles = false;
  // Nibbles in IntInterleave's layout: `codes` starts at a group of 16 rows; rows % 16 == 0.
  bool interleaved = false;
  const float* scales = nullptr;
  const float* zeros = nullptr;
  // Symmetric schemes: the zero every group has (2^(bits-1)), which the interleaved GEMV uses
  // instead of streaming `zeros`; 0 for asymmetric ones.
  int sym_zero = 0;
  int64_t groups() const { return cols / group; }
  size_t Param(int64_t r, int64_t g) const {
    constexpr int64_t R = kIntInterleaveRows;
    return interleaved ? size_t(((r / R) * groups() + g) * R + r % R) : size_t(r * groups() + g);
  }
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
// Whether IntInterleave applies to a nibble matrix: rows in whole groups of 16, and weight
// groups of whole 64-weight chunks (a chunk's low and high nibbles share their group) or of 32
// (a chunk's low nibbles are one group, its high ones the next).
inline bool IntInterleaves(int64_t rows, int64_t group) {
  return rows % kIntInterleaveRows == 0 && (group % kNibbleChunk == 0 || group == kNibbleChunk / 2);
}
// Byte b of row i (< 16) of a group of interleaved rows, as an offset from the group's start.
inline size_t IntInterleavedByte(int64_t i, size_t b) {
  return (b / 2 * size_t(kIntInterleaveRows) + size_t(i)) * 2 + b % 2;
}
// rows x row_bytes of nibbles (row-major) -> out in the interleaved layout (rows % 16 == 0).
void IntInterleave(const uint8_t* in, int64_t rows, size_t row_bytes, uint8_t* out);
// Parameters [rows, groups] -> the interleaved rows' order (IntRows::Param), and back.
std::vector<float> IntInterleaveParams(const std::vector<float>& p, int64_t rows, int64_t groups);
std::vector<float> IntDeinterleaveParams(const std::vector<float>& p, int64_t rows, int64_t groups);
// Row r's bytes in the row-major layout: the row itself, or (interleaved rows) its bytes gathered
// into tmp (row_bytes of room).
inline const uint8_t* IntRowBytes(const IntRows& w, int64_t r, uint8_t* tmp) {
  if (!w.interleaved) return w.codes + size_t(r) * w.row_bytes;
  const uint8_t* g = w.codes + size_t(r / kIntInterleaveRows * kIntInterleaveRows) * w.row_bytes;
  for (size_t b = 0; b < w.row_bytes; b += 2) {
    const size_t o = IntInterleavedByte(r % kIntInterleaveRows, b);
    tmp[b] = g[o];
    tmp[b + 1] = g[o + 1];
  }
  return tmp;
}
// Code (r, k) of w.
inline int IntCode(const IntRows& w, int64_t r, int64_t k) {
  if (!w.nibbles) return w.codes[size_t(r) * w.row_bytes + size_t(k)];
  const int64_t c = k / kNibbleChunk, j = k % kNibbleChunk;
  const size_t b = size_t(c * (kNibbleChunk / 2) + j % (kNibbleChunk / 2));
  const uint8_t v =
      w.interleaved ? w.codes[size_t(r / kIntInterleaveRows * kIntInterleaveRows) * w.row_bytes +
                              IntInterleavedByte(r % kIntInterleaveRows, b)]
                    : w.codes[size_t(r) * w.row_bytes + b];
  return j < kNibbleChunk / 2 ? (v & 15) : (v >> 4);
}

}  // namespace qf::kernels
