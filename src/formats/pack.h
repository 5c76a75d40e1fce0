// compressed-tensors "pack-quantized" int32 packing of integer codes (weight_packed along K,
// weight_zero_point along N). Contract: bit-identical to pack_to_int32 / unpack_from_int32 of
// vllm-project/compressed-tensors >= 0.18.0 (compressors/pack_quantized/helpers.py).
//
// Layout ("dense"): each run (a row of weight_packed, a column of weight_zero_point) is one
// little-endian bit stream of 32-bit words: value i at bits [i*b, i*b + b), lowest index in the
// lowest bits, a value may straddle two words (b = 3), the last word zero-padded;
// PackedLength(n, b) = ceil(n * b / 32) words. For b = 1, 2, 4, 8 this is the same as the
// floor(32 / b)-values-per-word layout of compressed-tensors <= 0.17; for b = 3 it is not (the
// old layout left the top two bits of each word empty), so 3-bit files of older versions are
// rejected by the reader. compressed-tensors quantizes to signed s in [-2^(b-1), 2^(b-1) - 1]
// and stores s + 2^(b-1), which is exactly qforge's unsigned code (the symmetric zero 2^(b-1)
// is stored as signed 0; an asymmetric zero z as z - 2^(b-1)).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "core/result.h"

namespace qf {

inline int64_t PackedLength(int64_t n, int bits) { return (n * bits + 31) / 32; }
// compressed-tensors' signed value of an unsigned code, and back.
inline int SignedFromCode(int code, int bits) { return code - (1 << (bits - 1)); }
inline int CodeFromSigned(int value, int bits) { return value + (1 << (bits - 1)); }

// weight_packed: codes[rows, cols] (each < 2^bits) -> int32 [rows, PackedLength(cols)].
std::vector<int32_t> PackAlongCols(std::span<const uint8_t> codes, int64_t rows, int64_t cols,
                                   int bits);
// Inverse; packed must hold rows * PackedLength(cols) words. Padding bits are ignored.
Result<std::vector<uint8_t>> UnpackAlongCols(std::span<const int32_t> packed, int64_t rows,
                                             int64_t cols, int bits);

// weight_zero_point: zeros[rows, cols] (each in [0, 2^bits)) -> int32 [PackedLength(rows), cols].
std::vector<int32_t> PackAlongRows(std::span<const int32_t> values, int64_t rows, int64_t cols,
                                   int bits);
Result<std::vector<int32_t>> UnpackAlongRows(std::span<const int32_t> packed, int64_t rows,
                                             int64_t cols, int bits);

}  // namespace qf
