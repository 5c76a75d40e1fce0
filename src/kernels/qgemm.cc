// Tile-wise dequantize + sgemm for quantized linears (see qgemm.h).
#include "kernels/qgemm.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <vector>

#include "formats/fp8.h"
#include "kernels/cpu/ggml_dot.h"
#include "kernels/ops.h"

namespace qf::kernels {
namespace {

// Output rows dequantized per tile: 64 rows × K floats stays in L2 for K up to ~8k.
constexpr int64_t kRowTile = 64;

// y[i, j] += bias[j] for the output columns [r0, r1) of y[m, N] (bias may be null).
void AddBias(const float* bias, float* y, int64_t m, int64_t N, int64_t r0, int64_t r1) {
  if (!bias) return;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = r0; j < r1; ++j) y[i * N + j] += bias[j];
}

}  // namespace

void DequantizeRows(const QuantizedTensor& w, int64_t r0, int64_t r1, float* out) {
  const int64_t K = w.cols, G = w.group_size(), groups = w.groups();
  const bool per_tensor = w.scheme.granularity == Granularity::kTensor;
  const bool has_zero = !w.zeros.empty();
  const float* lut =
      w.scheme.is_int()
          ? nullptr
          : (w.scheme.kind == QuantKind::kFp8E4M3 ? F8E4M3Values() : F8E5M2Values()).data();
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* codes = w.codes.data() + r * K;
    float* o = out + (r - r0) * K;
    for (int64_t g = 0; g < groups; ++g) {
      const size_t p = per_tensor ? 0 : size_t(r * groups + g);
      const float scale = w.scales[p];
      const uint8_t* c = codes + g * G;
      float* og = o + g * G;
      if (lut) {
        for (int64_t j = 0; j < G; ++j) og[j] = lut[c[j]] * scale;
      } else {
        const float zero = float(has_zero ? w.zeros[p] : (1 << (w.scheme.bits - 1)));
        for (int64_t j = 0; j < G; ++j) og[j] = scale * (float(c[j]) - zero);
      }
    }
  }
}

void MatMulDequantNT(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                     int64_t m) {
  const int64_t N = w.rows, K = w.cols;
  const int64_t tiles = (N + kRowTile - 1) / kRowTile;
#pragma omp parallel if (tiles > 1 && !omp_in_parallel())
  {
    std::vector<float> buf(static_cast<size_t>(kRowTile * K));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kRowTile, r1 = std::min(N, r0 + kRowTile);
      DequantizeRows(w, r0, r1, buf.data());
      GemmNT(x, buf.data(), y + r0, m, r1 - r0, K, N);
      AddBias(bias, y, m, N, r0, r1);
    }
  }
}

namespace {
// Rows [r0, r1) of w; for interleaved w, r0 and r1 must be multiples of 16 (or r1 = rows).
GgmlRows RowsOf(const GgmlTensor& w, int64_t r0, int64_t r1) {
  return {w.type, w.data + size_t(r0) * w.row_bytes, w.row_bytes, r1 - r0, w.cols, w.interleaved};
}
}  // namespace

void DequantizeRows(const GgmlTensor& w, int64_t r0, int64_t r1, float* out) {
  constexpr int64_t R = kGgmlInterleaveRows;
  if (w.interleaved && (r0 % R != 0 || r1 % R != 0)) {  // decode the whole groups around them
    const int64_t g0 = r0 / R * R, g1 = std::min(w.rows, (r1 + R - 1) / R * R);
    std::vector<float> groups(static_cast<size_t>((g1 - g0) * w.cols));
    GgmlDecodeRows(RowsOf(w, g0, g1), groups.data());
    std::copy(groups.begin() + (r0 - g0) * w.cols, groups.begin() + (r1 - g0) * w.cols, out);
    return;
  }
  if (GgmlKernelSupports(*w.type)) {
    GgmlDecodeRows(RowsOf(w, r0, r1), out);
    return;
  }
  for (int64_t r = r0; r < r1; ++r)
    w.type->decode(w.data + size_t(r) * w.row_bytes, w.cols, out + (r - r0) * w.cols);
}

// Rows per tile of MatMulGgmlNT. Each sgemm call packs all of X again, so with many tokens
// (prefill, ppl windows) narrow tiles cost more than the decoding: tiles then grow up to
// kTileFloats weights (4 MiB, whatever the model size), while the rows still split into at
// least kMinTiles tiles for the threads to share. Few tokens (generation) keep 64-row tiles.
// The tile depends on the shape only, never on the thread count: its rows are one sgemm's
// output columns, so every thread count computes the same bits.
constexpr int64_t kTileFloats = int64_t(1) << 20;
constexpr int64_t kMinTiles = 4;
// Up to this many tokens the fused GEMV of kernels/cpu/ggml_dot runs instead (rows split over the
// threads, at least kGemvRows each): decoding the blocks costs more than the dot products until
// the decoded weights are reused by enough tokens.
constexpr int64_t kGemvTokens = 8;
constexpr int64_t kGemvRows = 32;

int64_t GgmlTileRows(int64_t m, int64_t n, int64_t k) {
  if (m < 16) return kRowTile;
  auto round_up = [](int64_t v) { return (v + kRowTile - 1) / kRowTile * kRowTile; };
  int64_t rows = std::max(kRowTile, kTileFloats / k / kRowTile * kRowTile);
  rows = std::min(rows, round_up((n + kMinTiles - 1) / kMinTiles));
  return std::max(rows, kRowTile);
}

void MatMulGgmlNT(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols;
  const bool nested = omp_in_parallel();
  if (m <= kGemvTokens && GgmlKernelSupports(*w.type)) {
    // Each GgmlGemv call prepares the activations once; ranges are whole interleaved groups.
    ForEachThreadRows(N, kGemvRows, kGgmlInterleaveRows, [&](int64_t r0, int64_t r1) {
      GgmlGemv(RowsOf(w, r0, r1), x, m, y + r0, N);
      AddBias(bias, y, m, N, r0, r1);
    });
    return;
  }
  const int64_t tile = GgmlTileRows(m, N, K);
  const int64_t tiles = (N + tile - 1) / tile;
#pragma omp parallel if (tiles > 1 && !nested)
  {
    // Per thread, kept between calls (ppl runs one window per thread inside its own parallel
    // region, where this region is serial): grown to the largest tile seen, never shrunk.
    thread_local std::vector<float> buf;
    if (buf.size() < static_cast<size_t>(tile * K)) buf.resize(static_cast<size_t>(tile * K));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * tile, r1 = std::min(N, r0 + tile);
      DequantizeRows(w, r0, r1, buf.data());
      GemmNT(x, buf.data(), y + r0, m, r1 - r0, K, N);
      AddBias(bias, y, m, N, r0, r1);
    }
  }
}

void MatMulGgmlNTRef(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m) {
  std::vector<float> full(static_cast<size_t>(w.rows * w.cols));
  GgmlDecodeRowsRef(RowsOf(w, 0, w.rows), full.data());
  MatMulNTRef(x, full.data(), bias, y, m, w.rows, w.cols);
}

GgmlTensor ForKernels(GgmlTensor w) {
  if (w.interleaved || !GgmlInterleaves(*w.type) || w.rows % kGgmlInterleaveRows != 0) return w;
  auto owned = std::make_shared<std::vector<std::byte>>(size_t(w.rows) * w.row_bytes);
  GgmlInterleave(*w.type, w.data, w.rows, w.cols, owned->data());
  w.data = owned->data();
  w.owner = std::move(owned);
  w.interleaved = true;
  return w;
}

void MatMulDequantNTRef(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                        int64_t m) {
  std::vector<float> full(static_cast<size_t>(w.rows * w.cols));
  DequantizeRows(w, 0, w.rows, full.data());
  MatMulNTRef(x, full.data(), bias, y, m, w.rows, w.cols);
}

}  // namespace qf::kernels
