// The FP8 GEMM of fp8_gemm.h. AVX512-BF16 path: 16-row blocks widened to bf16 pairs ([k / 2][16
// rows] of 32-bit pairs), then up to two blocks × 6 tokens of zmm accumulators over all of K.
// fp32 path: activations and row tiles widened to fp32 with each pair's columns swapped, then
// F32Gemm (one fma chain per output over k in order: the contract's order). AMX path
// (kernels/cpu/amx.h's loop): the activations are the A tiles (16 tokens × 32 columns),
// WidenBlock's layout the B tiles (16 column pairs × 16 rows), widened 32 columns × 16 rows at a
// time in registers and transposed there.
#include "kernels/cpu/fp8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"
#include "formats/fp8.h"
#include "kernels/cpu/amx.h"
#include "kernels/cpu/f32_gemm.h"

namespace qf::kernels {
namespace {

constexpr int kTokens = 6;

// E4M3 byte -> bf16 bits (exact; NaN stays NaN).
const std::array<uint16_t, 256>& Bf16OfE4M3() {
  static const std::array<uint16_t, 256> t = [] {
    std::array<uint16_t, 256> o{};
    for (int b = 0; b < 256; ++b)
      o[size_t(b)] = uint16_t(BitsFromF32(F8E4M3Values()[size_t(b)]) >> 16);
    return o;
  }();
  return t;
}

// Rows [r0, r0 + 16) of w (zeros past w.rows) as bf16 pairs: out[q * 16 + i] holds columns 2q,
// 2q + 1 of row r0 + i.
void WidenBlock(const Fp8Rows& w, int64_t r0, uint32_t* out) {
  const std::array<uint16_t, 256>& lut = Bf16OfE4M3();
  const int64_t pairs = Fp8GemmCols2(w.cols) / 2;
  for (int i = 0; i < 16; ++i) {
    const int64_t r = r0 + i;
    if (r >= w.rows) {
      for (int64_t q = 0; q < pairs; ++q) out[q * 16 + i] = 0;
      continue;
    }
    const uint8_t* c = w.codes + size_t(r) * w.row_bytes;
    int64_t q = 0;
    for (; 2 * q + 1 < w.cols; ++q)
      out[q * 16 + i] = uint32_t(lut[c[2 * q]]) | uint32_t(lut[c[2 * q + 1]]) << 16;
    if (q < pairs) out[q * 16 + i] = lut[c[2 * q]];
  }
}

// Rows [r0, r1) of w as fp32 E4M3 values, Fp8GemmCols2(cols) per row, each pair's columns
// swapped (out[2q] = w[2q + 1], out[2q + 1] = w[2q]; the padding column 0).
void WidenRowsSwapped(const Fp8Rows& w, int64_t r0, int64_t r1, float* out) {
  const float* lut = F8E4M3Values().data();
  const int64_t cols2 = Fp8GemmCols2(w.cols);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* c = w.codes + size_t(r) * w.row_bytes;
    float* o = out + (r - r0) * cols2;
    int64_t k = 0;
    for (; k + 1 < w.cols; k += 2) {
      o[k] = lut[c[k + 1]];
      o[k + 1] = lut[c[k]];
    }
    if (k < w.cols) {
      o[k] = 0.0f;
      o[k + 1] = lut[c[k]];
    }
  }
}

// Weights per fp32 row tile (2 MiB, L2-sized), in 16 to 256 rows.
constexpr int64_t kFmaTileFloats = int64_t(1) << 19;

#if defined(__x86_64__)
template <int NB, int T>
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void Tile(const uint32_t* blk, int64_t pairs,
                                                                 const uint32_t* a, int64_t lda,
                                                                 float* acc, int64_t ldacc,
                                                                 int64_t valid) {
  __m512 c[NB][T];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) c[b][t] = _mm512_setzero_ps();
  for (int64_t q = 0; q < pairs; ++q) {
    __m512bh wv[NB];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) wv[b] = (__m512bh)_mm512_loadu_si512(blk + (b * pairs + q) * 16);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(int32_t(a[t * lda + q]));
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) c[b][t] = _mm512_dpbf16_ps(c[b][t], av, wv[b]);
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const int64_t n = std::min<int64_t>(16, valid - 16 * b);
      if (n <= 0) continue;
      _mm512_mask_storeu_ps(acc + t * ldacc + 16 * b, __mmask16((1u << n) - 1), c[b][t]);
    }
}

// ---- AMX-BF16 path: kernels/cpu/amx.h's loop; a step is 32 columns, its B tile a WidenBlock
// slice of 16 column pairs × 16 rows.
constexpr int kAmxCols = kAmxStepBytes / 2;

// E4M3 codes -> bf16 bits, 32 at a time (the table's values: exact; NaN as F8E4M3ToF32's).
__attribute__((target("avx512f,avx512bw"))) inline __m512i WidenE4M3x32(__m256i codes) {
  const __m512i b = _mm512_cvtepu8_epi16(codes);
  const __m512i mag = _mm512_and_si512(b, _mm512_set1_epi16(0x7f));
  const __m512i sign = _mm512_slli_epi16(_mm512_and_si512(b, _mm512_set1_epi16(0x80)), 8);
  // Normal: exponent e - 7 + 127 = e + 120, mantissa bits on top: (mag << 4) + (120 << 7).
  __m512i v = _mm512_add_epi16(_mm512_slli_epi16(mag, 4), _mm512_set1_epi16(120 << 7));
  // Subnormal (exponent 0): m · 2^-9, m = 0..7, from a table (index = mag < 8).
  alignas(64) static const uint16_t sub[32] = {0x0000, 0x3b00, 0x3b80, 0x3bc0,
                                               0x3c00, 0x3c20, 0x3c40, 0x3c60};
  v = _mm512_mask_mov_epi16(v, _mm512_cmplt_epu16_mask(mag, _mm512_set1_epi16(8)),
                            _mm512_permutexvar_epi16(mag, _mm512_load_si512(sub)));
  v = _mm512_mask_mov_epi16(v, _mm512_cmpeq_epi16_mask(mag, _mm512_set1_epi16(0x7f)),
                            _mm512_set1_epi16(0x7fc0));
  return _mm512_or_si512(v, sign);
}

// GCC 12 warns that the unpack/shuffle intrinsics' internal "undefined" operand may be used
// uninitialised (a false positive: the unmasked forms ignore it).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
// r[i] (16 dwords each) := column i of the 16 × 16 dword matrix whose rows are r[0..15].
__attribute__((target("avx512f"))) inline void Transpose16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  // r[4g + j] lane L now holds rows 4g..4g+3 of column 4L + j: for each j, transpose the 4 × 4
  // lanes of r[j], r[4 + j], r[8 + j], r[12 + j].
  for (int j = 0; j < 4; ++j) {
    t[j] = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88);      // lanes 0, 2 of each
    t[4 + j] = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);  // lanes 1, 3
    t[8 + j] = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88);
    t[12 + j] = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
    r[4 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0x88);
    r[12 + j] = _mm512_shuffle_i32x4(t[4 + j], t[12 + j], 0xdd);
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// WidenBlock's layout for the AMX B tiles, vectorised: steps [s0, s1) of rows [r0, r0 + 16)
// (zeros past w.rows and w.cols): out[(q - 16 s0) * 16 + i] = columns 2q, 2q + 1 of row r0 + i.
__attribute__((target("avx512f,avx512bw"))) void WidenBlockAmx(const Fp8Rows& w, int64_t r0,
                                                               int64_t s0, int64_t s1,
                                                               uint32_t* out) {
  const int64_t full = w.cols / kAmxCols * kAmxCols;
  alignas(32) uint8_t tail[kAmxCols];
  for (int64_t s = s0; s < s1; ++s) {
    const int64_t k0 = s * kAmxCols;
    __m512i r[16];
    for (int i = 0; i < 16; ++i) {
      const int64_t row = r0 + i;
      if (row >= w.rows) {
        r[i] = _mm512_setzero_si512();
        continue;
      }
      const uint8_t* c = w.codes + size_t(row) * w.row_bytes + k0;
      if (k0 < full) {
        r[i] = WidenE4M3x32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(c)));
      } else {  // the last columns, zeros after them (zero codes widen to +0)
        std::memset(tail, 0, kAmxCols);
        if (k0 < w.cols) std::memcpy(tail, c, size_t(w.cols - k0));
        r[i] = WidenE4M3x32(_mm256_load_si256(reinterpret_cast<const __m256i*>(tail)));
      }
    }
    Transpose16x16(r);
    for (int q = 0; q < 16; ++q) _mm512_storeu_si512(out + ((s - s0) * 16 + q) * 16, r[q]);
  }
}

using TileFn = void (*)(const uint32_t*, int64_t, const uint32_t*, int64_t, float*, int64_t,
                        int64_t);
template <int NB>
TileFn Pick(int t) {
  static constexpr TileFn f[kTokens] = {Tile<NB, 1>, Tile<NB, 2>, Tile<NB, 3>,
                                        Tile<NB, 4>, Tile<NB, 5>, Tile<NB, 6>};
  return f[t - 1];
}
#endif

}  // namespace

bool Fp8GemmBf16Available() {
#if defined(__x86_64__)
  static const bool v = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return v;
#else
  return false;
#endif
}

namespace {

// Whether the AVX512-BF16 path gives the contract's bits here (vdpbf16ps as two fp32 FMAs, odd
// element first, as Intel's manual defines it) and whether it is the faster path: both measured
// on 96 tokens × 128 rows × 1024 columns of random finite values (one F32Gemm tile: serial, as
// the bf16 path), widening included, best of 5 runs each, alternating.
struct Bf16Probe {
  bool exact = false, faster = false;
};

const Bf16Probe& ProbeBf16() {
  static const Bf16Probe v = [] {
    Bf16Probe p;
    if (!Fp8GemmBf16Available()) return p;
    const int64_t m = 96, n = 128, k = 1024;
    std::mt19937 rng(1);
    std::vector<uint8_t> codes(size_t(n * k));
    for (auto& c : codes) c = uint8_t(rng() % 0x7f) | uint8_t(rng() % 2 << 7);
    std::vector<uint16_t> a(size_t(m * k));
    for (auto& x : a)
      x = uint16_t(BitsFromF32(F8E4M3Values()[rng() % 0x7f]) >> 16 | (rng() % 2) << 15);
    std::vector<float> acc[2] = {std::vector<float>(size_t(m * n)),
                                 std::vector<float>(size_t(m * n))};
    const Fp8Rows w{codes.data(), size_t(k), n, k, nullptr};
    double best[2] = {1e30, 1e30};
    for (int rep = 0; rep < 5; ++rep)
      for (int path = 0; path < 2; ++path) {
        const auto t0 = std::chrono::steady_clock::now();
        (path == 0 ? Fp8GemmBf16 : Fp8GemmFma)(w, a.data(), m, acc[path].data(), n);
        const std::chrono::duration<double> d = std::chrono::steady_clock::now() - t0;
        best[path] = std::min(best[path], d.count());
      }
    p.exact = std::memcmp(acc[0].data(), acc[1].data(), acc[0].size() * sizeof(float)) == 0;
    p.faster = best[0] < best[1];
    return p;
  }();
  return v;
}

}  // namespace

bool Fp8GemmAmxAvailable() { return AmxUsable(AmxUnit::kBf16); }

void Fp8GemmAmx(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
#if defined(__x86_64__)
  const AmxTokens tokens(a, m, Fp8GemmCols2(w.cols) * 2);
  const int64_t row_blocks = (w.rows + 15) / 16;
  // Per thread, grown to the largest call seen: the two blocks' widened tiles, the sums.
  thread_local std::vector<uint32_t> widened[2], sums;
  AmxGemm(
      AmxUnit::kBf16, tokens, row_blocks,
      [&](int64_t block, int64_t s0, int64_t s1, int slot) {
        std::vector<uint32_t>& buf = widened[slot];
        if (buf.size() < size_t((s1 - s0) * 256)) buf.resize(size_t((s1 - s0) * 256));
        WidenBlockAmx(w, 16 * block, s0, s1, buf.data());
        return reinterpret_cast<const uint8_t*>(buf.data());
      },
      sums);
  AmxForEachSums(sums, m, row_blocks, [&](int64_t t, int64_t r0, const uint32_t* v) {
    std::memcpy(acc + t * ldacc + r0, v, size_t(std::min<int64_t>(16, w.rows - r0)) * 4);
  });
#else
  (void)w, (void)a, (void)m, (void)acc, (void)ldacc;
  QF_CHECK(false, "Fp8GemmAmx on a CPU without AMX-BF16");
#endif
}

bool Fp8GemmBf16IsExact() { return ProbeBf16().exact; }

bool Fp8GemmUsesBf16() { return ProbeBf16().exact && ProbeBf16().faster; }

std::string_view Fp8GemmPathName() {
  return Fp8GemmAmxAvailable() ? "amx-bf16" : Fp8GemmUsesBf16() ? "avx512-bf16" : "fp32-fma";
}

void Fp8Gemm(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
  if (Fp8GemmAmxAvailable()) return Fp8GemmAmx(w, a, m, acc, ldacc);
  (Fp8GemmUsesBf16() ? Fp8GemmBf16 : Fp8GemmFma)(w, a, m, acc, ldacc);
}

void Fp8GemmBf16(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
#if defined(__x86_64__)
  QF_CHECK(Fp8GemmBf16Available(), "Fp8GemmBf16 on a CPU without AVX512-BF16");
  const int64_t pairs = Fp8GemmCols2(w.cols) / 2;
  // Per thread, grown to the largest block pair seen.
  thread_local std::vector<uint32_t> buf;
  if (buf.size() < size_t(32 * pairs)) buf.resize(size_t(32 * pairs));
  const uint32_t* a32 = reinterpret_cast<const uint32_t*>(a);
  for (int64_t r0 = 0; r0 < w.rows; r0 += 32) {
    const int nb = r0 + 16 < w.rows ? 2 : 1;
    for (int b = 0; b < nb; ++b) WidenBlock(w, r0 + 16 * b, buf.data() + b * 16 * pairs);
    for (int64_t t = 0; t < m; t += kTokens) {
      const int nt = int(std::min<int64_t>(kTokens, m - t));
      (nb == 2 ? Pick<2>(nt) : Pick<1>(nt))(buf.data(), pairs, a32 + t * pairs, pairs,
                                            acc + t * ldacc + r0, ldacc, w.rows - r0);
    }
  }
#else
  (void)w, (void)a, (void)m, (void)acc, (void)ldacc;
  QF_CHECK(false, "Fp8GemmBf16 on a CPU without AVX512-BF16");
#endif
}

void Fp8GemmFma(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
  const int64_t cols2 = Fp8GemmCols2(w.cols);
  const int64_t tile = std::clamp<int64_t>(kFmaTileFloats / cols2 / 16 * 16, 16, 256);
  // Per thread, grown to the largest call seen; F32Gemm's threads (at top level) read them.
  thread_local std::vector<float> xa_buf, wt_buf;
  if (xa_buf.size() < size_t(m * cols2)) xa_buf.resize(size_t(m * cols2));
  if (wt_buf.size() < size_t(tile * cols2)) wt_buf.resize(size_t(tile * cols2));
  float* xa = xa_buf.data();
  float* wt = wt_buf.data();
  for (int64_t i = 0; i < m * cols2; i += 2) {
    xa[i] = BF16ToF32(a[i + 1]);
    xa[i + 1] = BF16ToF32(a[i]);
  }
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile) {
    const int64_t r1 = std::min(w.rows, r0 + tile);
    WidenRowsSwapped(w, r0, r1, wt);
    F32Gemm(BLayout::kNT, m, r1 - r0, cols2, 1.0f, xa, cols2, wt, cols2, acc + r0, ldacc);
  }
}

void Fp8GemmRef(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
  const int64_t cols2 = Fp8GemmCols2(w.cols);
  auto weight = [&](int64_t r, int64_t k) {
    return k < w.cols ? F8E4M3Values()[w.codes[size_t(r) * w.row_bytes + size_t(k)]] : 0.0f;
  };
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      float s = 0.0f;
      for (int64_t k = 0; k < cols2; k += 2) {
        s = std::fma(BF16ToF32(a[t * cols2 + k + 1]), weight(r, k + 1), s);
        s = std::fma(BF16ToF32(a[t * cols2 + k]), weight(r, k), s);
      }
      acc[t * ldacc + r] = s;
    }
}

}  // namespace qf::kernels
