// int8 × int8 → int32 GEMM for W8A8: int8 activations (one scale per token or per tensor) times
// int8 weights (one scale per output row), summed exactly in int32. Paths, chosen at run time
// from the CPU's features: AVX512-VNNI (vpdpbusd: unsigned activation bytes a + 128 times signed
// weights, four products summed per int32 lane, 16 rows per vector), AVX2 (the same sums from
// vpmaddubsw / vpmaddwd, the unsigned bytes split into 7 bits and 1 so that no 16-bit pair sum
// saturates), AMX-INT8 (tdpbusd on 16 × 64-byte tiles, where the OS allows them: the packed
// layout below is its B operand), and a portable plain loop. Every path returns the exact
// integer sums, so they agree bit for bit (tests compare each path the CPU has with
// Int8GemmRef).
//
// Weight layout: rows in blocks of 16, columns padded with zeros to cols4 = a multiple of 4;
// block b, column quad q holds 64 bytes, row i's four weights at byte 4 i: w[16 b + i, 4 q + j]
// at data[(b * cols4 / 4 + q) * 64 + 4 i + j]. Rows past `rows` (to the next 16) are zeros.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace qf::kernels {

constexpr int64_t kInt8RowBlock = 16;
// The largest cols: |Σ (a + 128) w| <= 255 * 128 * cols stays below 2^31.
constexpr int64_t kInt8MaxCols = 65536;
inline int64_t Int8Cols4(int64_t cols) { return (cols + 3) / 4 * 4; }
inline int64_t Int8Rows16(int64_t rows) { return (rows + 15) / 16 * 16; }
inline size_t Int8PackedBytes(int64_t rows, int64_t cols) {
  return size_t(Int8Rows16(rows)) * size_t(Int8Cols4(cols));
}

struct Int8Rows {
  const int8_t* data = nullptr;       // Int8PackedBytes(rows, cols)
  const int32_t* row_sums = nullptr;  // [Int8Rows16(rows)]: Σ_k w[r, k]
  int64_t rows = 0, cols = 0;
};

// w[rows, cols] (row-major, signed) -> out (Int8PackedBytes) and row_sums (Int8Rows16(rows)).
void Int8Pack(const int8_t* w, int64_t rows, int64_t cols, int8_t* out, int32_t* row_sums);
inline int Int8Weight(const Int8Rows& w, int64_t r, int64_t k) {
  const int64_t quads = Int8Cols4(w.cols) / 4;
  return w.data[((r / 16) * quads + k / 4) * 64 + (r % 16) * 4 + k % 4];
}

enum class Int8Path : uint8_t { kPortable, kAvx2, kAvx512Vnni, kAmx };
std::string_view Int8PathName(Int8Path p);
// The vector paths this CPU runs, the portable one first (the integer GEMMs of q8_gemm.h and
// a16_gemm.h choose among these; kAmx is never in it).
std::vector<Int8Path> Int8Paths();
// Int8Gemm's paths: Int8Paths() and kAmx where AmxUsable; the last is the one Int8Gemm takes
// for kInt8AmxMinTokens tokens or more, the one before it for fewer (decoding).
std::vector<Int8Path> Int8GemmPaths();
constexpr int64_t kInt8AmxMinTokens = 16;

// acc[t * ldacc + r] = Σ_k (au[t * cols4 + k] - 128) · w[r, k] for rows r in [r0, r1) (r0 a
// multiple of 16; r1 a multiple of 16 or w.rows; rows up to the next 16 are written too, so acc
// needs room for them) and tokens t < m. au: activations offset to unsigned bytes (a + 128),
// cols4 per token, the padding columns any value (their weights are zero).
void Int8Gemm(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1, int32_t* acc,
              int64_t ldacc);
void Int8GemmOn(Int8Path path, const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0,
                int64_t r1, int32_t* acc, int64_t ldacc);
// The reference: plain loops over w as Int8Weight reads it (rows [r0, min(r1, rows)) only).
void Int8GemmRef(const Int8Rows& w, const uint8_t* au, int64_t m, int64_t r0, int64_t r1,
                 int32_t* acc, int64_t ldacc);

}  // namespace qf::kernels
