// Kernels that run FP8 E4M3 weights (compressed-tensors FP8 / FP8-dynamic, and fp8-e4m3 weight
// rows) on their bytes (Highway, dispatched at run time): an E4M3 byte becomes its float in
// registers, exactly (sign, then the 7 magnitude bits shifted into a float's exponent and
// mantissa and scaled by 2^120: subnormals included; 0x7f and 0xff are NaN).
//   - Fp8DecodeRows (prefill tiles for the sgemm): value * scale, float for float equal to the
//     table decoder (F8E4M3Values()[byte] * scale).
//   - Fp8Gemv (decoding, a few tokens): Σ value · x in fp32 FMAs (weights exact, float
//     rounding of the products and sums), times the row's scale once.
#pragma once

#include <cstddef>
#include <cstdint>

namespace qf::kernels {

// Rows of E4M3 bytes [rows, cols], row_bytes apart, one scale per row.
struct Fp8Rows {
  const uint8_t* codes = nullptr;
  size_t row_bytes = 0;
  int64_t rows = 0, cols = 0;
  const float* scales = nullptr;
  // No NaN code (0x7f, 0xff) among the bytes: the kernels may skip their NaN select (the same
  // floats; Fp8NanFree tells, once per matrix).
  bool nan_free = false;
};

// Whether none of the n bytes is an E4M3 NaN code.
bool Fp8NanFree(const uint8_t* codes, size_t n);

void Fp8DecodeRows(const Fp8Rows& w, float* out);
// y[t * ldy + r] = scale(r) · Σ_k e4m3(w[r, k]) · x[t * cols + k]. Single-threaded.
void Fp8Gemv(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy);
// The references: the table decoder; dot products summed in double.
void Fp8DecodeRowsRef(const Fp8Rows& w, float* out);
void Fp8GemvRef(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy);

}  // namespace qf::kernels
