// Q4_0 / Q8_0 blocks <-> codes and scales of int4/int8-g32-sym (see ggml_grid.h).
#include "formats/ggml_grid.h"

#include <bit>
#include <cstring>

#include "core/dtype.h"

namespace qf {

static_assert(std::endian::native == std::endian::little, "fp16 scales are stored little-endian");

std::optional<QuantScheme> GgmlUniformScheme(const GgmlBlockType& t) {
  if (t.activation_only || !t.codes || t.codes->lut || t.block != 32) return std::nullopt;
  const int bits = t.codes->bits;
  // A symmetric grid, and a block that is one fp16 scale followed by the packed codes.
  if (t.codes->zero != 1 << (bits - 1) || t.block_bytes != 2 + size_t(t.block * bits / 8))
    return std::nullopt;
  const Result<QuantScheme> s = FindScheme(QuantKind::kInt, bits, true, Granularity::kGroup, 32);
  if (!s.ok()) return std::nullopt;
  return *s;
}

namespace {
Result<QuantScheme> SchemeOf(const GgmlBlockType& t) {
  const std::optional<QuantScheme> s = GgmlUniformScheme(t);
  if (!s) return Err("{} blocks are not a uniform integer grid (Q4_0 and Q8_0 are)", t.name);
  return *s;
}
}  // namespace

Result<QuantizedTensor> GgmlToQuantized(const GgmlBlockType& t, std::span<const std::byte> in,
                                        int64_t rows, int64_t cols) {
  QF_ASSIGN(const QuantScheme scheme, SchemeOf(t));
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, rows, cols));
  if (in.size() != bytes)
    return Err("{}: {} bytes for {} x {} weights, expected {}", t.name, in.size(), rows, cols,
               bytes);
  QuantizedTensor q;
  q.scheme = scheme;
  q.rows = rows;
  q.cols = cols;
  q.codes.resize(size_t(rows * cols));
  q.scales.resize(size_t(rows * cols / t.block));
  GgmlLattice lattice[32];
  for (size_t b = 0; b < q.scales.size(); ++b) {
    const std::byte* block = in.data() + b * t.block_bytes;
    GgmlGetCodes(t, block, q.codes.data() + b * size_t(t.block));
    t.codes->lattice(block, lattice);
    q.scales[b] = lattice[0].scale;
  }
  return q;
}

Result<std::vector<std::byte>> QuantizedToGgml(const GgmlBlockType& t, const QuantizedTensor& q) {
  QF_ASSIGN(const QuantScheme scheme, SchemeOf(t));
  if (!(q.scheme == scheme)) return Err("{} holds {}, not {}", t.name, scheme.name, q.scheme.name);
  QF_TRY(Validate(q));
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, q.rows, q.cols));
  std::vector<std::byte> out(bytes);
  for (size_t b = 0; b < q.scales.size(); ++b) {
    std::byte* block = out.data() + b * t.block_bytes;
    const uint16_t d = F16BitsRne(q.scales[b]);
    std::memcpy(block, &d, 2);
    GgmlSetCodes(t, q.codes.data() + b * size_t(t.block), block);
  }
  return out;
}

}  // namespace qf
