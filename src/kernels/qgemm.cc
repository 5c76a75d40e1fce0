// Tile-wise dequantize + sgemm for quantized linears (see qgemm.h).
#include "kernels/qgemm.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/vec_math.h"
#include "formats/fp8.h"
#include "kernels/cpu/a16_gemm.h"
#include "kernels/cpu/fp8_gemm.h"
#include "kernels/cpu/ggml_dot.h"
#include "kernels/cpu/q8_gemm.h"
#include "kernels/ops.h"

namespace qf::kernels {
namespace {

// Output rows dequantized per tile: 64 rows × K floats stays in L2 for K up to ~8k.
constexpr int64_t kRowTile = 64;

// A per-thread buffer (the caller's thread_local vector) grown to at least n elements, never
// shrunk; its data. The pointer is what row workers on other threads use: there, the name of a
// thread_local refers to their own (empty) buffer.
template <class T>
T* Grown(std::vector<T>& v, int64_t n, T fill = T()) {
  if (v.size() < size_t(n)) v.resize(size_t(n), fill);
  return v.data();
}

// y[i, j] += bias[j] for the output columns [r0, r1) of y[m, N] (bias may be null).
void AddBias(const float* bias, float* y, int64_t m, int64_t N, int64_t r0, int64_t r1) {
  if (!bias) return;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = r0; j < r1; ++j) y[i * N + j] += bias[j];
}

// Rows per tile of ggml blocks' float prefill. Each tile's GEMM streams all of X again, so with
// many tokens (prefill, ppl windows) narrow tiles cost more than the decoding: tiles then grow up
// to kTileFloats weights (4 MiB, whatever the model size), while the rows still split into at
// least kMinTiles tiles for the threads to share. Few tokens (generation) keep 64-row tiles.
// No tiling changes a bit: F32Gemm computes each output as one fma chain over K.
constexpr int64_t kTileFloats = int64_t(1) << 20;
constexpr int64_t kMinTiles = 4;

int64_t TileRows(int64_t m, int64_t n, int64_t k) {
  if (m < 16) return kRowTile;
  auto round_up = [](int64_t v) { return (v + kRowTile - 1) / kRowTile * kRowTile; };
  int64_t rows = std::max(kRowTile, kTileFloats / k / kRowTile * kRowTile);
  rows = std::min(rows, round_up((n + kMinTiles - 1) / kMinTiles));
  return std::max(rows, kRowTile);
}

// y[m, N] = x · decode(W)ᵀ (+ bias), W decoded `tile` rows at a time by decode(r0, r1, out)
// into a per-thread buffer right before the GEMM of those rows (GemmNT); tiles spread over the
// threads. The compressed-tensors paths keep kRowTile rows, ggml blocks take TileRows.
template <class Decode>
void TiledGemm(const float* x, int64_t N, int64_t K, const float* bias, float* y, int64_t m,
               int64_t tile, Decode&& decode) {
  const int64_t tiles = (N + tile - 1) / tile;
#pragma omp parallel if (tiles > 1 && !omp_in_parallel())
  {
    // Per thread, kept between calls (ppl runs one window per thread inside its own parallel
    // region, where this region is serial): grown to the largest tile seen, never shrunk.
    thread_local std::vector<float> buf_vec;
    float* buf = Grown(buf_vec, tile * K);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * tile, r1 = std::min(N, r0 + tile);
      decode(r0, r1, buf);
      GemmNT(x, buf, y + r0, m, r1 - r0, K, N);
      AddBias(bias, y, m, N, r0, r1);
    }
  }
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
  TiledGemm(x, w.rows, w.cols, bias, y, m, kRowTile,
            [&](int64_t r0, int64_t r1, float* out) { DequantizeRows(w, r0, r1, out); });
}

void MatMulBf16NT(const float* x, const uint16_t* w, const float* bias, float* y, int64_t m,
                  int64_t n, int64_t k) {
  if (m <= kGemmNTGemvTokens) {
    ForEachThreadRows(n, 64, kGemvRowMultiple, [&](int64_t r0, int64_t r1) {
      for (int64_t i = 0; i < m; ++i)
        vec::GemvRowsBf16(w + r0 * k, x + i * k, r1 - r0, k, y + i * n + r0);
      AddBias(bias, y, m, n, r0, r1);
    });
    return;
  }
  TiledGemm(x, n, k, bias, y, m, kRowTile, [&](int64_t r0, int64_t r1, float* out) {
    for (int64_t i = r0 * k; i < r1 * k; ++i) out[i - r0 * k] = BF16ToF32(w[i]);
  });
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

// The decoding GEMVs' rows per thread, at least (ggml blocks and compressed-tensors codes).
constexpr int64_t kGemvRows = 32;

namespace {

// Rows per tile of the Q8 prefill GEMM: each tile's levels (rows x K bytes) are decoded once and
// reused by every token; 64 rows keep them in L2 for K up to 8k.
constexpr int64_t kQ8TileRows = 64;

bool UseQ8Prefill() {
  static const bool vnni = Int8Paths().back() == Int8Path::kAvx512Vnni;
  return vnni;
}

}  // namespace

std::string PrefillKernels() {
  const std::string a16 =
      A16GemmFast() ? std::string(Int8PathName(A16Paths().back())) : "fp32 tiles";
  const std::string q8 =
      UseQ8Prefill() ? std::string(Int8PathName(Int8Paths().back())) : "fp32 tiles";
  return "W8A8 " + std::string(Int8PathName(Int8GemmPaths().back())) + ", FP8 " +
         std::string(Fp8GemmPathName()) + ", W4A16/W8A16 " + a16 + ", ggml " + q8;
}

bool GgmlQ8Runs(const GgmlTensor& w) {
  return UseQ8Prefill() && GgmlKernelSupports(*w.type) && w.cols % kQ8Block == 0 &&
         w.cols <= kInt8MaxCols;
}

bool MatMulGgmlQ8(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols;
  // The caller's thread quantizes; the row workers read it (Apply runs concurrently: per thread).
  thread_local Q8Activations acts;
  if (!QuantizeQ8(x, m, K, acts)) return false;
  const Q8Activations& xa = acts;
  const int64_t tiles = (N + kQ8TileRows - 1) / kQ8TileRows;
#pragma omp parallel if (tiles > 1 && !omp_in_parallel())
  {
    thread_local std::vector<int8_t> levels;
    thread_local std::vector<float> a, c;
    thread_local Q8Weights packed;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kQ8TileRows, r1 = std::min(N, r0 + kQ8TileRows);
      int8_t* lv = Grown(levels, (r1 - r0) * K);
      float* av = Grown(a, (r1 - r0) * K / 16);
      float* cv = Grown(c, (r1 - r0) * K / 16);
      const GgmlLevelsInfo info = GgmlDecodeLevels(RowsOf(w, r0, r1), lv, av, cv);
      PackQ8Weights(lv, av, info.has_min ? cv : nullptr, r1 - r0, K, info.span, packed);
      Q8Gemm(packed, xa, y + r0, N);
      AddBias(bias, y, m, N, r0, r1);
    }
  }
  return true;
}

void MatMulGgmlNT(const float* x, const GgmlTensor& w, const float* bias, float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols;
  if (m <= kGgmlGemvTokens && GgmlKernelSupports(*w.type)) {
    // Each GgmlGemv call prepares the activations once; ranges are whole interleaved groups.
    ForEachThreadRows(N, kGemvRows, kGgmlInterleaveRows, [&](int64_t r0, int64_t r1) {
      GgmlGemv(RowsOf(w, r0, r1), x, m, y + r0, N);
      AddBias(bias, y, m, N, r0, r1);
    });
    return;
  }
  if (!w.float_prefill && GgmlQ8Runs(w) && MatMulGgmlQ8(x, w, bias, y, m)) return;
  TiledGemm(x, N, K, bias, y, m, TileRows(m, N, K),
            [&](int64_t r0, int64_t r1, float* out) { DequantizeRows(w, r0, r1, out); });
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

IntRows QuantMatrix::Rows(int64_t r0, int64_t r1) const {
  return {codes.data() + size_t(r0) * row_bytes,
          row_bytes,
          r1 - r0,
          cols,
          group,
          layout == Layout::kNibbles || layout == Layout::kNibbles16,
          layout == Layout::kNibbles16,
          scales.data() + r0 * groups(),
          zeros.data() + r0 * groups(),
          scheme.is_int() && scheme.symmetric ? 1 << (scheme.bits - 1) : 0};
}

Fp8Rows QuantMatrix::Fp8(int64_t r0, int64_t r1) const {
  return {codes.data() + size_t(r0) * row_bytes,
          row_bytes,
          r1 - r0,
          cols,
          scales.data() + r0,
          fp8_nan_free};
}

Int8Rows QuantMatrix::Int8() const {
  return {reinterpret_cast<const int8_t*>(codes.data()), row_sums.data(), rows, cols};
}

size_t QuantMatrix::StreamedBytes() const {
  return codes.size() + scales.size() * sizeof(float) +
         (scheme.symmetric ? 0 : zeros.size() * sizeof(float)) + row_sums.size() * sizeof(int32_t);
}

QuantMatrix ToKernelLayout(const QuantizedTensor& q, const ActQuant& act) {
  QuantMatrix w;
  w.scheme = q.scheme;
  w.rows = q.rows;
  w.cols = q.cols;
  const bool per_tensor = q.scheme.granularity == Granularity::kTensor;
  w.group = per_tensor ? q.cols : q.group_size();
  const int64_t N = q.rows, K = q.cols, groups = w.groups();
  w.scales.resize(size_t(N * groups));
  for (int64_t p = 0; p < N * groups; ++p) w.scales[size_t(p)] = q.scales[per_tensor ? 0 : p];
  if (q.scheme.is_int()) {
    w.zeros.resize(w.scales.size());
    for (int64_t p = 0; p < N * groups; ++p)
      w.zeros[size_t(p)] = q.zeros.empty() ? float(1 << (q.scheme.bits - 1))
                                           : float(q.zeros[size_t(per_tensor ? 0 : p)]);
  }
  const bool int8_act = act.enabled() && act.scheme->kind == QuantKind::kInt && q.scheme.is_int() &&
                        q.scheme.bits == 8 && q.scheme.granularity != Granularity::kGroup &&
                        K <= kInt8MaxCols;
  if (int8_act) {
    w.layout = QuantMatrix::Layout::kInt8x16;
    std::vector<int8_t> s(q.codes.size());
    for (size_t i = 0; i < s.size(); ++i) s[i] = int8_t(int(q.codes[i]) - 128);
    w.codes.resize(Int8PackedBytes(N, K));
    w.row_sums.resize(size_t(Int8Rows16(N)));
    Int8Pack(s.data(), N, K, reinterpret_cast<int8_t*>(w.codes.data()), w.row_sums.data());
  } else if (q.scheme.is_int() && q.scheme.bits <= 4 && K % kNibbleChunk == 0) {
    w.layout = QuantMatrix::Layout::kNibbles;
    w.row_bytes = size_t(K / 2);
    w.codes.assign(size_t(N) * w.row_bytes, 0);
    constexpr int64_t half = kNibbleChunk / 2;
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t c = k / kNibbleChunk, j = k % kNibbleChunk;
        uint8_t& b = w.codes[size_t(r) * w.row_bytes + size_t(c * half + j % half)];
        b |= uint8_t(q.codes[size_t(r * K + k)] << (j < half ? 0 : 4));
      }
    if (IntInterleaves(N, w.group)) {
      const AlignedVector<uint8_t> rows = std::move(w.codes);
      w.codes.resize(rows.size());
      IntInterleave(rows.data(), N, w.row_bytes, w.codes.data());
      w.scales = IntInterleaveParams(w.scales, N, groups);
      w.zeros = IntInterleaveParams(w.zeros, N, groups);
      w.layout = QuantMatrix::Layout::kNibbles16;
    }
  } else {
    w.layout = QuantMatrix::Layout::kBytes;
    w.row_bytes = size_t(K);
    w.codes.assign(q.codes.begin(), q.codes.end());
    if (q.scheme.kind == QuantKind::kFp8E4M3)
      w.fp8_nan_free = Fp8NanFree(w.codes.data(), w.codes.size());
  }
  return w;
}

QuantizedTensor FromKernelLayout(const QuantMatrix& w) {
  QuantizedTensor q;
  q.scheme = w.scheme;
  q.rows = w.rows;
  q.cols = w.cols;
  const int64_t N = w.rows, K = w.cols;
  q.codes.resize(size_t(N * K));
  if (w.layout == QuantMatrix::Layout::kInt8x16) {
    const Int8Rows i8 = w.Int8();
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k)
        q.codes[size_t(r * K + k)] = uint8_t(Int8Weight(i8, r, k) + 128);
  } else if (w.layout == QuantMatrix::Layout::kNibbles ||
             w.layout == QuantMatrix::Layout::kNibbles16) {
    const IntRows rows = w.Rows(0, N);
    for (int64_t r = 0; r < N; ++r)
      for (int64_t k = 0; k < K; ++k) q.codes[size_t(r * K + k)] = uint8_t(IntCode(rows, r, k));
  } else {
    q.codes.assign(w.codes.begin(), w.codes.end());
  }
  const bool per_tensor = w.scheme.granularity == Granularity::kTensor;
  const bool inter = w.layout == QuantMatrix::Layout::kNibbles16;
  const std::vector<float> scales =
      inter ? IntDeinterleaveParams(w.scales, N, w.groups()) : w.scales;
  const std::vector<float> zeros = inter ? IntDeinterleaveParams(w.zeros, N, w.groups()) : w.zeros;
  q.scales = per_tensor ? std::vector<float>{scales[0]} : scales;
  if (w.scheme.is_int() && !w.scheme.symmetric) {
    for (size_t p = 0; p < (per_tensor ? 1 : zeros.size()); ++p)
      q.zeros.push_back(int32_t(zeros[p]));
  }
  return q;
}

namespace {

constexpr int64_t kInt8GemmRows = 32;
constexpr int64_t kFp8GemmRows = 32;
// Rows per tile of the A16 prefill GEMM: each tile's levels are packed once and reused by every
// token.
constexpr int64_t kA16TileRows = 64;

// The epilogue of the integer and fp8 GEMMs: the sum times the activation and weight scales,
// in that order, plus the bias.
inline float Scaled(float sum, float scale_x, float scale_w, const float* bias, int64_t r) {
  const float v = sum * scale_x * scale_w;
  return bias ? v + bias[r] : v;
}

void DecodeQuantRows(const QuantMatrix& w, int64_t r0, int64_t r1, float* out) {
  const int64_t K = w.cols;
  if (w.layout == QuantMatrix::Layout::kInt8x16) {
    const Int8Rows i8 = w.Int8();
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t k = 0; k < K; ++k)
        out[(r - r0) * K + k] =
            w.scales[size_t(r)] * (float(Int8Weight(i8, r, k) + 128) - w.zeros[size_t(r)]);
  } else if (w.scheme.is_int()) {
    IntDecodeRows(w.Rows(r0, r1), out);
  } else if (w.scheme.kind == QuantKind::kFp8E4M3) {
    Fp8DecodeRows(w.Fp8(r0, r1), out);
  } else {
    const float* lut =
        (w.scheme.kind == QuantKind::kFp8E4M3 ? F8E4M3Values() : F8E5M2Values()).data();
    for (int64_t r = r0; r < r1; ++r) {
      const uint8_t* c = w.codes.data() + size_t(r) * w.row_bytes;
      float* o = out + (r - r0) * K;
      for (int64_t k = 0; k < K; ++k)
        o[k] = lut[c[k]] * w.scales[size_t(r * w.groups() + k / w.group)];
    }
  }
}

// y = float(acc - (zero - 128) * Σa) * scale_x * scale_w (+ bias) from exact int8 sums; false
// when x has a non-finite value.
bool MatMulInt8(const float* x, const QuantMatrix& w, const ActQuant& act, const float* bias,
                float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols, cols4 = Int8Cols4(K), N16 = Int8Rows16(N);
  // Per thread: Apply runs concurrently (one window per thread in ppl/kld).
  thread_local std::vector<uint8_t> au_buf;
  thread_local std::vector<float> sa_buf;
  thread_local std::vector<int32_t> acc_buf, sx_buf;
  uint8_t* au = Grown(au_buf, m * cols4, uint8_t(128));
  float* sa = Grown(sa_buf, m);
  int32_t* acc = Grown(acc_buf, m * N16);
  int32_t* sx = Grown(sx_buf, m);
  if (!QuantizeActivationsU8(act, x, m, K, au, cols4, sa)) return false;
  const bool asym = !w.scheme.symmetric;
  if (asym)
    for (int64_t t = 0; t < m; ++t) {
      int32_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += int32_t(au[t * cols4 + k]) - 128;
      sx[t] = s;
    }
  const Int8Rows i8 = w.Int8();
  ForEachThreadRows(N, kInt8GemmRows, kInt8RowBlock, [&](int64_t r0, int64_t r1) {
    Int8Gemm(i8, au, m, r0, r1, acc, N16);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = r0; r < r1; ++r) {
        int32_t a = acc[t * N16 + r];
        if (asym) a -= (int32_t(w.zeros[size_t(r)]) - 128) * sx[t];
        y[t * N + r] = Scaled(float(a), sa[t], w.scales[size_t(r)], bias, r);
      }
  });
  return true;
}

// FP8 weights × fp8 activations (kernels/cpu/fp8_gemm.h: exact products, fp32 sums; one fp32
// chain per output with the same bits on every CPU, or the AMX tiles' own sums where they run):
// y = acc * scale_x * scale_w (+ bias); false when x has a non-finite value.
bool MatMulFp8(const float* x, const QuantMatrix& w, const ActQuant& act, const float* bias,
               float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols, cols2 = Fp8GemmCols2(K);
  thread_local std::vector<uint16_t> a_buf;
  thread_local std::vector<float> sa_buf;
  uint16_t* a = Grown(a_buf, m * cols2);
  float* sa = Grown(sa_buf, m);
  if (!QuantizeActivationsBf16(act, x, m, K, a, cols2, sa)) return false;
  if (cols2 != K)
    for (int64_t t = 0; t < m; ++t) a[t * cols2 + K] = 0;
  ForEachThreadRows(N, kFp8GemmRows, kFp8GemmRows, [&](int64_t r0, int64_t r1) {
    Fp8Gemm(w.Fp8(r0, r1), a, m, y + r0, N);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t r = r0; r < r1; ++r)
        y[t * N + r] = Scaled(y[t * N + r], sa[t], w.scales[size_t(r)], bias, r);
  });
  return true;
}

}  // namespace

bool MatMulA16(const float* x, const QuantMatrix& w, const float* bias, float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols, span = A16Span(K, w.group);
  if (span == 0 || !w.scheme.is_int() || w.layout == QuantMatrix::Layout::kInt8x16) return false;
  // The caller's thread quantizes; the row workers read it (Apply runs concurrently: per thread).
  thread_local A16Activations acts;
  if (!QuantizeA16(x, m, K, span, acts)) return false;
  const A16Activations& xa = acts;
  const int64_t tiles = (N + kA16TileRows - 1) / kA16TileRows;
#pragma omp parallel if (tiles > 1 && !omp_in_parallel())
  {
    thread_local A16Weights packed;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t r0 = t * kA16TileRows, r1 = std::min(N, r0 + kA16TileRows);
      PackA16Weights(w.Rows(r0, r1), span, packed);
      A16Gemm(packed, xa, y + r0, N);
      AddBias(bias, y, m, N, r0, r1);
    }
  }
  return true;
}

void MatMulQuantNT(const float* x, const QuantMatrix& w, const ActQuant& act, const float* bias,
                   float* y, int64_t m) {
  if (w.layout == QuantMatrix::Layout::kInt8x16 && MatMulInt8(x, w, act, bias, y, m)) return;
  if (m > kQuantGemvTokens && w.scheme.kind == QuantKind::kFp8E4M3 && act.enabled() &&
      act.scheme->kind == QuantKind::kFp8E4M3 && MatMulFp8(x, w, act, bias, y, m))
    return;
  if (act.enabled()) {
    // Per thread: Apply is const and runs concurrently (one window per thread in ppl/kld).
    // Grown on demand, never shrunk: at most M·max(K) floats per thread.
    thread_local std::vector<float> xq_buf;
    float* xq = Grown(xq_buf, m * w.cols);
    QuantizeActivations(act, x, xq, m, w.cols);
    x = xq;
  }
  const int64_t N = w.rows, K = w.cols;
  const bool e4m3 = w.scheme.kind == QuantKind::kFp8E4M3;
  if ((w.scheme.is_int() || e4m3) && w.layout != QuantMatrix::Layout::kInt8x16 &&
      m <= kQuantGemvTokens) {
    // Integer rows: the fixed-point activations once, shared by the threads.
    thread_local std::vector<int16_t> xq_buf;
    thread_local std::vector<float> dx_buf;
    int16_t* xq = e4m3 ? nullptr : Grown(xq_buf, m * K);
    float* dx = e4m3 ? nullptr : Grown(dx_buf, m);
    const bool fixed = !e4m3 && IntGemvActivations(x, m, K, xq, dx);
    const int64_t align = w.layout == QuantMatrix::Layout::kNibbles16 ? kIntInterleaveRows : 1;
    ForEachThreadRows(N, kGemvRows, align, [&](int64_t r0, int64_t r1) {
      if (e4m3) {
        Fp8Gemv(w.Fp8(r0, r1), x, m, y + r0, N);
      } else if (fixed) {
        IntGemvFixed(w.Rows(r0, r1), xq, dx, m, y + r0, N);
      } else {  // a non-finite activation: IntGemv's float path
        IntGemv(w.Rows(r0, r1), x, m, y + r0, N);
      }
      AddBias(bias, y, m, N, r0, r1);
    });
    return;
  }
  if (w.scheme.is_int() && !w.float_prefill && A16GemmFast() && MatMulA16(x, w, bias, y, m)) return;
  TiledGemm(x, N, K, bias, y, m, kRowTile,
            [&](int64_t r0, int64_t r1, float* out) { DecodeQuantRows(w, r0, r1, out); });
}

void MatMulQuantNTRef(const float* x, const QuantMatrix& w, const ActQuant& act, const float* bias,
                      float* y, int64_t m) {
  const int64_t N = w.rows, K = w.cols;
  if (w.layout == QuantMatrix::Layout::kInt8x16) {
    const int64_t cols4 = Int8Cols4(K), N16 = Int8Rows16(N);
    std::vector<uint8_t> au(size_t(m * cols4), 128);
    std::vector<float> sa(static_cast<size_t>(m));
    if (QuantizeActivationsU8(act, x, m, K, au.data(), cols4, sa.data())) {
      std::vector<int32_t> acc(size_t(m * N16));
      Int8GemmRef(w.Int8(), au.data(), m, 0, N, acc.data(), N16);
      for (int64_t t = 0; t < m; ++t) {
        int32_t sx = 0;
        for (int64_t k = 0; k < K; ++k) sx += int32_t(au[size_t(t * cols4 + k)]) - 128;
        for (int64_t r = 0; r < N; ++r) {
          const int32_t a = acc[size_t(t * N16 + r)] - (int32_t(w.zeros[size_t(r)]) - 128) * sx;
          y[t * N + r] = Scaled(float(a), sa[size_t(t)], w.scales[size_t(r)], bias, r);
        }
      }
      return;
    }
  }
  std::vector<float> xq(size_t(m * K));
  QuantizeActivationsRef(act, x, xq.data(), m, K);
  MatMulDequantNTRef(xq.data(), FromKernelLayout(w), bias, y, m);
}

void MatMulDequantNTRef(const float* x, const QuantizedTensor& w, const float* bias, float* y,
                        int64_t m) {
  std::vector<float> full(static_cast<size_t>(w.rows * w.cols));
  DequantizeRows(w, 0, w.rows, full.data());
  MatMulNTRef(x, full.data(), bias, y, m, w.rows, w.cols);
}

}  // namespace qf::kernels
