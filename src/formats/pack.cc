// Packing loops for the compressed-tensors int32 layout (reference, plain loops).
// Contract: see pack.h; packers check their invariants, unpackers validate file-sized input.
#include "formats/pack.h"

#include <bit>

namespace qf {
namespace {

void CheckBits(int bits) { QF_CHECK(bits >= 1 && bits <= 8, "bits {}", bits); }

// Validates a packed buffer before unpacking [rows, cols] packed along cols or along rows.
Status CheckUnpack(size_t have, int64_t rows, int64_t cols, int bits, bool along_cols) {
  if (bits < 1 || bits > 8) return Err("cannot unpack {}-bit values (1..8)", bits);
  if (rows <= 0 || cols <= 0) return Err("cannot unpack a [{}, {}] tensor", rows, cols);
  const int64_t want =
      along_cols ? rows * PackedLength(cols, bits) : PackedLength(rows, bits) * cols;
  if (have != static_cast<size_t>(want)) {
    return Err("packed tensor has {} int32 words, expected {} for [{}, {}] at {} bits", have, want,
               rows, cols, bits);
  }
  return Status::Ok();
}

}  // namespace

std::vector<int32_t> PackAlongCols(std::span<const uint8_t> codes, int64_t rows, int64_t cols,
                                   int bits) {
  CheckBits(bits);
  QF_CHECK(codes.size() == static_cast<size_t>(rows * cols), "{} codes for [{}, {}]", codes.size(),
           rows, cols);
  const int pf = PackFactor(bits);
  const int64_t words = PackedLength(cols, bits);
  std::vector<int32_t> out(static_cast<size_t>(rows * words));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t w = 0; w < words; ++w) {
      uint32_t word = 0;
      for (int i = 0; i < pf && w * pf + i < cols; ++i) {
        const uint32_t v = codes[static_cast<size_t>(r * cols + w * pf + i)];
        QF_CHECK(v >> bits == 0, "code {} does not fit {} bits", v, bits);
        word |= v << (i * bits);
      }
      out[static_cast<size_t>(r * words + w)] = std::bit_cast<int32_t>(word);
    }
  }
  return out;
}

Result<std::vector<uint8_t>> UnpackAlongCols(std::span<const int32_t> packed, int64_t rows,
                                             int64_t cols, int bits) {
  QF_TRY(CheckUnpack(packed.size(), rows, cols, bits, /*along_cols=*/true));
  const int pf = PackFactor(bits);
  const int64_t words = PackedLength(cols, bits);
  const uint32_t mask = (1u << bits) - 1;
  std::vector<uint8_t> codes(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const auto word = std::bit_cast<uint32_t>(packed[static_cast<size_t>(r * words + c / pf)]);
      codes[static_cast<size_t>(r * cols + c)] =
          static_cast<uint8_t>((word >> ((c % pf) * bits)) & mask);
    }
  }
  return codes;
}

std::vector<int32_t> PackAlongRows(std::span<const int32_t> values, int64_t rows, int64_t cols,
                                   int bits) {
  CheckBits(bits);
  QF_CHECK(values.size() == static_cast<size_t>(rows * cols), "{} values for [{}, {}]",
           values.size(), rows, cols);
  const int pf = PackFactor(bits);
  const int64_t words = PackedLength(rows, bits);
  std::vector<uint32_t> out(static_cast<size_t>(words * cols), 0u);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int32_t v = values[static_cast<size_t>(r * cols + c)];
      QF_CHECK(v >= 0 && v >> bits == 0, "value {} does not fit {} bits", v, bits);
      out[static_cast<size_t>((r / pf) * cols + c)] |= static_cast<uint32_t>(v)
                                                       << ((r % pf) * bits);
    }
  }
  std::vector<int32_t> result(out.size());
  for (size_t i = 0; i < out.size(); ++i) result[i] = std::bit_cast<int32_t>(out[i]);
  return result;
}

Result<std::vector<int32_t>> UnpackAlongRows(std::span<const int32_t> packed, int64_t rows,
                                             int64_t cols, int bits) {
  QF_TRY(CheckUnpack(packed.size(), rows, cols, bits, /*along_cols=*/false));
  const int pf = PackFactor(bits);
  const uint32_t mask = (1u << bits) - 1;
  std::vector<int32_t> values(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const auto word = std::bit_cast<uint32_t>(packed[static_cast<size_t>((r / pf) * cols + c)]);
      values[static_cast<size_t>(r * cols + c)] =
          static_cast<int32_t>((word >> ((r % pf) * bits)) & mask);
    }
  }
  return values;
}

}  // namespace qf
