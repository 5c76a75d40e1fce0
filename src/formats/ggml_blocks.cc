// The ggml block-format table and the row drivers over it (see ggml_blocks.h); the per-type
// codecs live in ggml_legacy.cc and ggml_kquants.cc, the shared searches in ggml_search.cc.
#include "formats/ggml_blocks.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <vector>

#include "formats/ggml_blocks_impl.h"

namespace qf {
namespace {

using namespace ggml;

// Ordered by ggml type id (ggml.h enum ggml_type); block bytes as ggml-common.h's structs.
constexpr std::array<GgmlBlockType, 14> kTable = {{
    {"Q4_0", 2, 32, 18, false, EncodeQ4_0, DecodeQ4_0},
    {"Q4_1", 3, 32, 20, false, EncodeQ4_1, DecodeQ4_1},
    {"Q5_0", 6, 32, 22, false, EncodeQ5_0, DecodeQ5_0},
    {"Q5_1", 7, 32, 24, false, EncodeQ5_1, DecodeQ5_1},
    {"Q8_0", 8, 32, 34, false, EncodeQ8_0, DecodeQ8_0},
    {"Q8_1", 9, 32, 36, true, EncodeQ8_1, DecodeQ8_1},
    {"Q2_K", 10, 256, 84, false, EncodeQ2_K, DecodeQ2_K},
    {"Q3_K", 11, 256, 110, false, EncodeQ3_K, DecodeQ3_K},
    {"Q4_K", 12, 256, 144, false, EncodeQ4_K, DecodeQ4_K},
    {"Q5_K", 13, 256, 176, false, EncodeQ5_K, DecodeQ5_K},
    {"Q6_K", 14, 256, 210, false, EncodeQ6_K, DecodeQ6_K},
    {"Q8_K", 15, 256, 292, true, EncodeQ8_K, DecodeQ8_K},
    {"IQ4_NL", 20, 32, 18, false, EncodeIQ4_NL, DecodeIQ4_NL},
    {"IQ4_XS", 23, 256, 136, false, EncodeIQ4_XS, DecodeIQ4_XS},
}};

bool EqualsNoCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Rows with at least this many weights in all are split over threads.
constexpr int64_t kParallelWeights = 1 << 16;

bool RunParallel(int64_t rows, int64_t cols) {
  return rows > 1 && rows * cols >= kParallelWeights && !omp_in_parallel();
}

Status CheckImportance(const GgmlBlockType& t, const float* importance, int64_t cols) {
  if (!importance) return Status::Ok();
  for (int64_t c = 0; c < cols; ++c) {
    if (!(importance[c] >= 0) || !std::isfinite(importance[c])) {
      return Err("ggml {}: importance of column {} is {}; expected a finite value >= 0", t.name,
                 c, importance[c]);
    }
  }
  return Status::Ok();
}

}  // namespace

std::span<const GgmlBlockType> GgmlBlockTypes() { return kTable; }

const GgmlBlockType* FindGgmlBlockType(std::string_view name) {
  for (const GgmlBlockType& t : kTable) {
    if (EqualsNoCase(t.name, name)) return &t;
  }
  return nullptr;
}

const GgmlBlockType* FindGgmlBlockType(int id) {
  for (const GgmlBlockType& t : kTable) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

Result<uint64_t> GgmlRowsBytes(const GgmlBlockType& t, int64_t rows, int64_t cols) {
  if (rows < 0) return Err("ggml {}: negative row count {}", t.name, rows);
  if (cols <= 0 || cols % t.block != 0) {
    return Err("ggml {}: a row of {} weights is not a positive multiple of the block size {}",
               t.name, cols, t.block);
  }
  const uint64_t blocks = uint64_t(cols / t.block);
  if (rows > 0 && blocks * t.block_bytes > UINT64_MAX / uint64_t(rows)) {
    return Err("ggml {}: {} x {} weights overflow a byte count", t.name, rows, cols);
  }
  return uint64_t(rows) * blocks * t.block_bytes;
}

Status QuantizeRowsGgml(const GgmlBlockType& t, const float* x, int64_t rows, int64_t cols,
                        const float* importance, std::byte* out) {
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, rows, cols));
  QF_TRY(CheckImportance(t, importance, cols));
  const size_t row_bytes = size_t(bytes / uint64_t(std::max<int64_t>(rows, 1)));
#pragma omp parallel for if (RunParallel(rows, cols)) schedule(dynamic, 4)
  for (int64_t r = 0; r < rows; ++r) {
    t.encode(x + r * cols, cols, importance, out + size_t(r) * row_bytes);
  }
  return Status::Ok();
}

Status DequantizeRowsGgml(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                          float* out) {
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, rows, cols));
  const size_t row_bytes = size_t(bytes / uint64_t(std::max<int64_t>(rows, 1)));
#pragma omp parallel for if (RunParallel(rows, cols)) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    t.decode(in + size_t(r) * row_bytes, cols, out + r * cols);
  }
  return Status::Ok();
}

Status QuantizeDequantizeGgml(const GgmlBlockType& t, const float* x, int64_t rows, int64_t cols,
                              const float* importance, float* out) {
  QF_ASSIGN(const uint64_t bytes, GgmlRowsBytes(t, rows, cols));
  QF_TRY(CheckImportance(t, importance, cols));
  const size_t row_bytes = size_t(bytes / uint64_t(std::max<int64_t>(rows, 1)));
  // One row of bytes per row in flight: the whole tensor's bytes are never held.
#pragma omp parallel if (RunParallel(rows, cols))
  {
    std::vector<std::byte> block(row_bytes);
#pragma omp for schedule(dynamic, 4)
    for (int64_t r = 0; r < rows; ++r) {
      t.encode(x + r * cols, cols, importance, block.data());
      t.decode(block.data(), cols, out + r * cols);
    }
  }
  return Status::Ok();
}

}  // namespace qf
