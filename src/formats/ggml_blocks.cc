// The ggml block-format table and the row drivers over it (see ggml_blocks.h); the per-type
// codecs live in ggml_legacy.cc and ggml_kquants.cc, the shared searches in ggml_search.cc.
#include "formats/ggml_blocks.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <vector>

#include "formats/ggml_blocks_impl.h"

namespace qf {
namespace {

using namespace ggml;

// formats/ggml_types.h's codec rows, ordered by ggml type id.
const GgmlBlockType kTable[] = {
#define QF_GGML_WEIGHTS_ROW(T, id, type_name, weights, bytes, family) \
  {#T, id, weights, bytes, false, Encode##T, Decode##T, &kCodes##T},
#define QF_GGML_ACTIVATIONS_ROW(T, id, type_name, weights, bytes) \
  {#T, id, weights, bytes, true, Encode##T, Decode##T, nullptr},
    QF_GGML_TYPES(QF_GGML_WEIGHTS_ROW, QF_GGML_ACTIVATIONS_ROW, QF_GGML_SKIP)
#undef QF_GGML_WEIGHTS_ROW
#undef QF_GGML_ACTIVATIONS_ROW
};

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
      return Err("ggml {}: importance of column {} is {}; expected a finite value >= 0", t.name, c,
                 importance[c]);
    }
  }
  return Status::Ok();
}

}  // namespace

void GgmlGetCodes(const GgmlBlockType& t, const std::byte* block, uint8_t* codes) {
  const auto* b = reinterpret_cast<const uint8_t*>(block);
  GgmlCodeField f[2];
  for (int i = 0; i < int(t.block); ++i) {
    const int nf = t.codes->fields(i, f);
    int code = 0, at = 0;
    for (int j = 0; j < nf; ++j) {
      code |= ((b[f[j].byte] >> f[j].shift) & ((1 << f[j].width) - 1)) << at;
      at += f[j].width;
    }
    codes[i] = uint8_t(code ^ t.codes->flip);
  }
}

void GgmlSetCodes(const GgmlBlockType& t, const uint8_t* codes, std::byte* block) {
  auto* b = reinterpret_cast<uint8_t*>(block);
  GgmlCodeField f[2];
  for (int i = 0; i < int(t.block); ++i) {
    const int nf = t.codes->fields(i, f);
    int code = codes[i] ^ t.codes->flip;
    for (int j = 0; j < nf; ++j) {
      const int mask = ((1 << f[j].width) - 1) << f[j].shift;
      b[f[j].byte] = uint8_t((b[f[j].byte] & ~mask) | ((code << f[j].shift) & mask));
      code >>= f[j].width;
    }
  }
}

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
