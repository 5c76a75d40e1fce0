// Packing loops for the compressed-tensors int32 layout (reference, plain loops).
// Contract: see pack.h; packers check their invariants, unpackers validate file-sized input.
#include "formats/pack.h"

#include <bit>

namespace qf {
namespace {

// Runs of a row-major [rows, cols] matrix: its rows (along_cols; packed shape
// [rows, PackedLength(cols)]) or its columns (packed shape [PackedLength(rows), cols]).
struct Runs {
  int64_t rows, cols;
  int bits;
  bool along_cols;

  int64_t count() const { return along_cols ? rows : cols; }
  int64_t len() const { return along_cols ? cols : rows; }
  int64_t words() const { return PackedLength(len(), bits); }
  size_t Value(int64_t run, int64_t i) const {
    return static_cast<size_t>(along_cols ? run * cols + i : i * cols + run);
  }
  size_t Word(int64_t run, int64_t w) const {
    return static_cast<size_t>(along_cols ? run * words() + w : w * cols + run);
  }
};

template <class T>
std::vector<int32_t> Pack(std::span<const T> v, const Runs& d) {
  QF_CHECK(d.bits >= 1 && d.bits <= 8, "bits {}", d.bits);
  QF_CHECK(v.size() == static_cast<size_t>(d.rows * d.cols), "{} values for [{}, {}]", v.size(),
           d.rows, d.cols);
  std::vector<uint32_t> out(static_cast<size_t>(d.count() * d.words()), 0u);
  for (int64_t run = 0; run < d.count(); ++run) {
    for (int64_t i = 0; i < d.len(); ++i) {
      const T raw = v[d.Value(run, i)];
      QF_CHECK(raw >= 0 && raw >> d.bits == 0, "value {} does not fit {} bits", int64_t{raw},
               d.bits);
      const auto x = static_cast<uint32_t>(raw);
      const int64_t w = i * d.bits / 32;
      const int o = static_cast<int>(i * d.bits % 32);
      out[d.Word(run, w)] |= x << o;
      if (o + d.bits > 32) out[d.Word(run, w + 1)] |= x >> (32 - o);
    }
  }
  std::vector<int32_t> result(out.size());
  for (size_t i = 0; i < out.size(); ++i) result[i] = std::bit_cast<int32_t>(out[i]);
  return result;
}

template <class T>
Result<std::vector<T>> Unpack(std::span<const int32_t> packed, const Runs& d) {
  if (d.bits < 1 || d.bits > 8) return Err("cannot unpack {}-bit values (1..8)", d.bits);
  if (d.rows <= 0 || d.cols <= 0) return Err("cannot unpack a [{}, {}] tensor", d.rows, d.cols);
  const int64_t want = d.count() * d.words();
  if (packed.size() != static_cast<size_t>(want)) {
    return Err("packed tensor has {} int32 words, expected {} for [{}, {}] at {} bits",
               packed.size(), want, d.rows, d.cols, d.bits);
  }
  std::vector<T> out(static_cast<size_t>(d.rows * d.cols));
  const uint64_t mask = (uint64_t{1} << d.bits) - 1;
  for (int64_t run = 0; run < d.count(); ++run) {
    for (int64_t i = 0; i < d.len(); ++i) {
      const int64_t w = i * d.bits / 32;
      const int o = static_cast<int>(i * d.bits % 32);
      uint64_t x = uint64_t{std::bit_cast<uint32_t>(packed[d.Word(run, w)])} >> o;
      if (o + d.bits > 32)
        x |= uint64_t{std::bit_cast<uint32_t>(packed[d.Word(run, w + 1)])} << (32 - o);
      out[d.Value(run, i)] = static_cast<T>(x & mask);
    }
  }
  return out;
}

}  // namespace

std::vector<int32_t> PackAlongCols(std::span<const uint8_t> codes, int64_t rows, int64_t cols,
                                   int bits) {
  return Pack(codes, {rows, cols, bits, true});
}

Result<std::vector<uint8_t>> UnpackAlongCols(std::span<const int32_t> packed, int64_t rows,
                                             int64_t cols, int bits) {
  return Unpack<uint8_t>(packed, {rows, cols, bits, true});
}

std::vector<int32_t> PackAlongRows(std::span<const int32_t> values, int64_t rows, int64_t cols,
                                   int bits) {
  return Pack(values, {rows, cols, bits, false});
}

Result<std::vector<int32_t>> UnpackAlongRows(std::span<const int32_t> packed, int64_t rows,
                                             int64_t cols, int bits) {
  return Unpack<int32_t>(packed, {rows, cols, bits, false});
}

}  // namespace qf
