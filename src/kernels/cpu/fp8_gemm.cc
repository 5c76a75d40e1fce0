// The AVX512-BF16 FP8 GEMM of fp8_gemm.h: 16-row blocks widened to bf16 pairs ([k / 2][16 rows]
// of 32-bit pairs), then up to two blocks × 6 tokens of zmm accumulators over all of K.
#include "kernels/cpu/fp8_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "core/dtype.h"
#include "formats/fp8.h"

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

bool Fp8GemmAvailable() {
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

void Fp8Gemm(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
#if defined(__x86_64__)
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
  Fp8GemmRef(w, a, m, acc, ldacc);
#endif
}

void Fp8GemmRef(const Fp8Rows& w, const uint16_t* a, int64_t m, float* acc, int64_t ldacc) {
  const int64_t cols2 = Fp8GemmCols2(w.cols);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0.0;
      for (int64_t k = 0; k < w.cols; ++k)
        s += double(BF16ToF32(a[t * cols2 + k])) *
             double(F8E4M3Values()[w.codes[size_t(r) * w.row_bytes + size_t(k)]]);
      acc[t * ldacc + r] = float(s);
    }
}

}  // namespace qf::kernels
