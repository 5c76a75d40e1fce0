// The Q8 activations and the paths of q8_gemm.h. Register blocking as int8_gemm.cc's: up to two
// 16-row blocks times up to 4 tokens, each with an int32 accumulator for the current span and a
// float accumulator for the output; a span's int32 sums start at the block's -128 · Σ levels (so
// the unsigned activation bytes give the signed sums) and go into the float accumulators at the
// span's end.
#include "kernels/cpu/q8_gemm.h"

#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/result.h"
#include "kernels/cpu/int8_x86.h"

namespace qf::kernels {
namespace {

using int8_x86::Load4;

// The scales' shared part: z per 16 and per 32 from the integer sums.
void SpanSums(Q8Activations& o) {
  const int64_t n16 = o.K / 16;
  for (int64_t t = 0; t < o.m; ++t)
    for (int64_t j = 0; j < n16; ++j) {
      const size_t i = size_t(t * n16 + j);
      o.z16[i] = o.d[i / 2] * float(o.s16[i]);
      if (j % 2 == 1) o.z32[i / 2] = o.d[i / 2] * float(o.s16[i - 1] + o.s16[i]);
    }
}

void Resize(int64_t m, int64_t K, Q8Activations& o) {
  QF_CHECK(K % kQ8Block == 0, "Q8 activations: {} columns, not a multiple of {}", K, kQ8Block);
  o.m = m;
  o.K = K;
  o.u.resize(size_t(m * K));
  o.d.resize(size_t(m * K / 32));
  o.z16.resize(size_t(m * K / 16));
  o.z32.resize(size_t(m * K / 32));
  o.s16.resize(size_t(m * K / 16));
}

// One block of 32: its scale and 1/scale; false when 1/scale overflows (subnormal scales).
bool BlockScale(float amax, float& d, float& id) {
  d = amax / 127.f;
  id = d != 0.f ? 1.f / d : 0.f;
  return id <= std::numeric_limits<float>::max();
}

#if defined(__x86_64__)
// Tokens [t0, t1).
__attribute__((target("avx512f,avx512bw,avx512dq"))) bool QuantizeAvx512(const float* x, int64_t t0,
                                                                         int64_t t1,
                                                                         Q8Activations& o) {
  const int64_t K = o.K, nb = K / 32;
  const __m512 lim = _mm512_set1_ps(127.f), nlim = _mm512_set1_ps(-127.f);
  const __m512i off = _mm512_set1_epi32(128);
  for (int64_t t = t0; t < t1; ++t) {
    const float* xt = x + t * K;
    __m512 probe = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m512 v0 = _mm512_loadu_ps(xt + 32 * b), v1 = _mm512_loadu_ps(xt + 32 * b + 16);
      probe = _mm512_fmadd_ps(v0, _mm512_setzero_ps(), probe);
      probe = _mm512_fmadd_ps(v1, _mm512_setzero_ps(), probe);
      const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
      float d, id;
      if (!BlockScale(amax, d, id)) return false;
      o.d[size_t(t * nb + b)] = d;
      const __m512 vid = _mm512_set1_ps(id);
      for (int h = 0; h < 2; ++h) {
        __m512 s = _mm512_mul_ps(h ? v1 : v0, vid);
        s = _mm512_min_ps(_mm512_max_ps(s, nlim), lim);
        const __m512i q = _mm512_cvtps_epi32(
            _mm512_roundscale_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        o.s16[size_t(t * 2 * nb + 2 * b + h)] = _mm512_reduce_add_epi32(q);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o.u.data() + t * K + 32 * b + 16 * h),
                         _mm512_cvtepi32_epi8(_mm512_add_epi32(q, off)));
      }
    }
    if (_mm512_reduce_add_ps(probe) != 0.f) return false;
  }
  return true;
}
#endif

// ---- the GEMM paths ----------------------------------------------------------------------------

struct Spans {
  const Q8Weights& w;
  const Q8Activations& x;
  int64_t K, quads, spans, nd;
  const float* z;
  Spans(const Q8Weights& w_, const Q8Activations& x_)
      : w(w_),
        x(x_),
        K(w_.cols),
        quads(w_.cols / 4),
        spans(w_.spans()),
        nd(w_.cols / 32),
        z((w_.span == 16 ? x_.z16 : x_.z32).data()) {}
  size_t P(int64_t b, int64_t j) const { return size_t((b * spans + j) * 16); }
  float D(int64_t t, int64_t j) const { return x.d[size_t(t * nd + j * w.span / 32)]; }
  float Z(int64_t t, int64_t j) const { return z[size_t(t * spans + j)]; }
};

void Portable(const Spans& s, float* y, int64_t ldy) {
  const Q8Weights& w = s.w;
  const int64_t S = w.span;
  for (int64_t b = 0; b * 16 < w.rows; ++b) {
    const int8_t* blk = w.codes.data() + b * s.quads * 64;
    for (int64_t t = 0; t < s.x.m; ++t) {
      const uint8_t* a = s.x.u.data() + t * s.K;
      float out[16] = {};
      for (int64_t j = 0; j < s.spans; ++j) {
        int32_t acc[16];
        for (int i = 0; i < 16; ++i) acc[i] = w.init[s.P(b, j) + size_t(i)];
        for (int64_t q = j * S / 4; q < (j + 1) * S / 4; ++q)
          for (int i = 0; i < 16; ++i)
            for (int k = 0; k < 4; ++k) acc[i] += int32_t(a[4 * q + k]) * blk[q * 64 + 4 * i + k];
        for (int i = 0; i < 16; ++i) {
          out[i] = std::fma(float(acc[i]), w.a[s.P(b, j) + size_t(i)] * s.D(t, j), out[i]);
          if (w.has_min) out[i] = std::fma(-w.c[s.P(b, j) + size_t(i)], s.Z(t, j), out[i]);
        }
      }
      for (int i = 0; i < 16 && b * 16 + i < w.rows; ++i) y[t * ldy + b * 16 + i] = out[i];
    }
  }
}

#if defined(__x86_64__)
constexpr int kMaxTokens = 4;

template <int NB, int T, int S, bool kMin>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniTile(const Spans& s, int64_t b0,
                                                                     int64_t t0, float* y,
                                                                     int64_t ldy) {
  const Q8Weights& w = s.w;
  const int8_t* blk = w.codes.data() + b0 * s.quads * 64;
  const uint8_t* u = s.x.u.data() + t0 * s.K;
  __m512 out[NB][T];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[b][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < s.spans; ++j) {
    __m512i acc[NB][T];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const __m512i init = _mm512_loadu_si512(w.init.data() + s.P(b0 + b, j));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[b][t] = init;
    }
    for (int64_t q = j * (S / 4); q < (j + 1) * (S / 4); ++q) {
      __m512i wv[NB];
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(blk + (b * s.quads + q) * 64);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const __m512i av = _mm512_set1_epi32(Load4(u + t * s.K + 4 * q));
#pragma GCC unroll 8
        for (int b = 0; b < NB; ++b) acc[b][t] = _mm512_dpbusd_epi32(acc[b][t], av, wv[b]);
      }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const __m512 av = _mm512_loadu_ps(w.a.data() + s.P(b0 + b, j));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t)
        out[b][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[b][t]),
                                    _mm512_mul_ps(av, _mm512_set1_ps(s.D(t0 + t, j))), out[b][t]);
      if constexpr (kMin) {
        const __m512 cv = _mm512_loadu_ps(w.c.data() + s.P(b0 + b, j));
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t)
          out[b][t] = _mm512_fnmadd_ps(cv, _mm512_set1_ps(s.Z(t0 + t, j)), out[b][t]);
      }
    }
  }
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b) {
    const int64_t r = (b0 + b) * 16, n = std::min<int64_t>(16, w.rows - r);
    const __mmask16 mask = __mmask16((1u << n) - 1);
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * ldy + r, mask, out[b][t]);
  }
}

// AVX2: a 16-row block as two halves of 8 rows; the sums by int8_x86::DotBytes (as
// int8_gemm.cc's AVX2 path).
template <int NB, int T, int S, bool kMin>
__attribute__((target("avx2,fma"))) void Avx2Tile(const Spans& s, int64_t b0, int64_t t0, float* y,
                                                  int64_t ldy) {
  static_assert(NB == 1);
  const Q8Weights& w = s.w;
  const int8_t* blk = w.codes.data() + b0 * s.quads * 64;
  const uint8_t* u = s.x.u.data() + t0 * s.K;
  __m256 out[2][T];
#pragma GCC unroll 8
  for (int h = 0; h < 2; ++h)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[h][t] = _mm256_setzero_ps();
  for (int64_t j = 0; j < s.spans; ++j) {
    __m256i acc[2][T];
#pragma GCC unroll 8
    for (int h = 0; h < 2; ++h) {
      const __m256i init =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.init.data() + s.P(b0, j) + 8 * h));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[h][t] = init;
    }
    for (int64_t q = j * (S / 4); q < (j + 1) * (S / 4); ++q) {
      __m256i wv[2];
#pragma GCC unroll 8
      for (int h = 0; h < 2; ++h)
        wv[h] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + q * 64 + 32 * h));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        const int8_x86::Avx2Bytes av = int8_x86::SplitBytes(u + t * s.K + 4 * q);
#pragma GCC unroll 8
        for (int h = 0; h < 2; ++h)
          acc[h][t] = _mm256_add_epi32(acc[h][t], int8_x86::DotBytes(av, wv[h]));
      }
    }
#pragma GCC unroll 8
    for (int h = 0; h < 2; ++h) {
      const __m256 av = _mm256_loadu_ps(w.a.data() + s.P(b0, j) + 8 * h);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t)
        out[h][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[h][t]),
                                    _mm256_mul_ps(av, _mm256_set1_ps(s.D(t0 + t, j))), out[h][t]);
      if constexpr (kMin) {
        const __m256 cv = _mm256_loadu_ps(w.c.data() + s.P(b0, j) + 8 * h);
#pragma GCC unroll 8
        for (int t = 0; t < T; ++t)
          out[h][t] = _mm256_fnmadd_ps(cv, _mm256_set1_ps(s.Z(t0 + t, j)), out[h][t]);
      }
    }
  }
  const int64_t r = b0 * 16;
#pragma GCC unroll 8
  for (int h = 0; h < 2; ++h)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      float tmp[8];
      _mm256_storeu_ps(tmp, out[h][t]);
      for (int i = 0; i < 8 && r + 8 * h + i < w.rows; ++i)
        y[(t0 + t) * ldy + r + 8 * h + i] = tmp[i];
    }
}

using TileFn = void (*)(const Spans&, int64_t, int64_t, float*, int64_t);

template <template <int, int, int, bool> class K, int S, bool kMin>
TileFn PickT(int nb, int t) {
  static constexpr TileFn f[2][kMaxTokens] = {
      {K<1, 1, S, kMin>::fn, K<1, 2, S, kMin>::fn, K<1, 3, S, kMin>::fn, K<1, 4, S, kMin>::fn},
      {K<2, 1, S, kMin>::fn, K<2, 2, S, kMin>::fn, K<2, 3, S, kMin>::fn, K<2, 4, S, kMin>::fn}};
  return f[nb - 1][t - 1];
}
template <template <int, int, int, bool> class K>
TileFn Pick(int nb, int t, int span, bool has_min) {
  if (span == 16) return has_min ? PickT<K, 16, true>(nb, t) : PickT<K, 16, false>(nb, t);
  return has_min ? PickT<K, 32, true>(nb, t) : PickT<K, 32, false>(nb, t);
}

template <int NB, int T, int S, bool kMin>
struct VnniK {
  static constexpr TileFn fn = &VnniTile<NB, T, S, kMin>;
};
// AVX2 holds one 16-row block and up to 2 tokens (16 ymm registers).
template <int NB, int T, int S, bool kMin>
struct Avx2K {
  static constexpr TileFn fn = &Avx2Tile<1, (T < 2 ? T : 2), S, kMin>;
};

template <template <int, int, int, bool> class K>
void Tiled(const Spans& s, float* y, int64_t ldy, int max_nb, int max_t) {
  const int64_t blocks = Int8Rows16(s.w.rows) / 16;
  for (int64_t b = 0; b < blocks;) {
    const int nb = b + max_nb <= blocks ? max_nb : 1;
    for (int64_t t = 0; t < s.x.m; t += max_t) {
      const int nt = int(std::min<int64_t>(max_t, s.x.m - t));
      Pick<K>(nb, nt, s.w.span, s.w.has_min)(s, b, t, y, ldy);
    }
    b += nb;
  }
}
#endif

}  // namespace

bool QuantizeQ8Ref(const float* x, int64_t m, int64_t K, Q8Activations& o) {
  Resize(m, K, o);
  for (int64_t t = 0; t < m; ++t)
    for (int64_t b = 0; b < K / 32; ++b) {
      const float* xb = x + t * K + 32 * b;
      float amax = 0.f;
      for (int k = 0; k < 32; ++k) {
        if (!std::isfinite(xb[k])) return false;
        amax = std::max(amax, std::fabs(xb[k]));
      }
      float d, id;
      if (!BlockScale(amax, d, id)) return false;
      o.d[size_t(t * (K / 32) + b)] = d;
      for (int h = 0; h < 2; ++h) {
        int32_t sum = 0;
        for (int k = 16 * h; k < 16 * h + 16; ++k) {
          const int q = int(std::nearbyint(std::clamp(xb[k] * id, -127.f, 127.f)));
          sum += q;
          o.u[size_t(t * K + 32 * b + k)] = uint8_t(q + 128);
        }
        o.s16[size_t(t * (K / 16) + 2 * b + h)] = sum;
      }
    }
  SpanSums(o);
  return true;
}

bool QuantizeQ8(const float* x, int64_t m, int64_t K, Q8Activations& o) {
#if defined(__x86_64__)
  if (int8_x86::HasAvx512Quantize()) {
    Resize(m, K, o);
    if (!int8_x86::ForTokenParts(
            m, [&](int64_t t0, int64_t t1) { return QuantizeAvx512(x, t0, t1, o); }))
      return false;
    SpanSums(o);
    return true;
  }
#endif
  return QuantizeQ8Ref(x, m, K, o);
}

void PackQ8Weights(const int8_t* levels, const float* a16, const float* c16, int64_t rows,
                   int64_t cols, int span, Q8Weights& out) {
  QF_CHECK(cols % kQ8Block == 0 && (span == 16 || span == 32) && cols <= kInt8MaxCols,
           "Q8 GEMM: {} columns with spans of {}", cols, span);
  out.rows = rows;
  out.cols = cols;
  out.span = span;
  out.has_min = c16 != nullptr;
  const int64_t quads = cols / 4, spans = cols / span, R16 = Int8Rows16(rows);
  out.codes.resize(size_t(R16 * cols));
  out.init.resize(size_t(R16 * spans));
  out.a.resize(size_t(R16 * spans));
  out.c.resize(out.has_min ? size_t(R16 * spans) : 0);
  if (rows < R16) {  // the last block's padding rows: zero levels and factors
    const int64_t b = rows / 16;
    std::fill(out.codes.begin() + b * quads * 64, out.codes.end(), int8_t(0));
    std::fill(out.init.begin() + b * spans * 16, out.init.end(), 0);
    std::fill(out.a.begin() + b * spans * 16, out.a.end(), 0.f);
    std::fill(out.c.begin() + std::min<int64_t>(int64_t(out.c.size()), b * spans * 16), out.c.end(),
              0.f);
  }
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = r / 16, i = r % 16;
    const int8_t* lr = levels + r * cols;
    int8_t* dst = out.codes.data() + b * quads * 64 + 4 * i;
    for (int64_t q = 0; q < quads; ++q) std::memcpy(dst + q * 64, lr + 4 * q, 4);
    for (int64_t j = 0; j < spans; ++j) {
      int32_t sum = 0;
      for (int64_t k = j * span; k < (j + 1) * span; ++k) sum += lr[k];
      const size_t p = size_t((b * spans + j) * 16 + i), f = size_t((r * cols + j * span) / 16);
      out.init[p] = -128 * sum;
      out.a[p] = a16[f];
      if (out.has_min) out.c[p] = c16[f];
    }
  }
}

void Q8GemmOn(Int8Path path, const Q8Weights& w, const Q8Activations& x, float* y, int64_t ldy) {
  QF_CHECK(x.K == w.cols, "Q8 GEMM: activations of {} columns for weights of {}", x.K, w.cols);
  const Spans s(w, x);
  switch (path) {
#if defined(__x86_64__)
    case Int8Path::kAvx512Vnni:
      return Tiled<VnniK>(s, y, ldy, 2, kMaxTokens);
    case Int8Path::kAvx2:
      return Tiled<Avx2K>(s, y, ldy, 1, 2);
#endif
    default:
      return Portable(s, y, ldy);
  }
}

void Q8Gemm(const Q8Weights& w, const Q8Activations& x, float* y, int64_t ldy) {
  static const Int8Path best = Int8Paths().back();
  Q8GemmOn(best, w, x, y, ldy);
}

void Q8GemmRef(const int8_t* levels, const float* a16, const float* c16, int64_t rows, int64_t cols,
               int span, const Q8Activations& x, float* y, int64_t ldy) {
  const int64_t spans = cols / span, nd = cols / 32;
  const std::vector<float>& z = span == 16 ? x.z16 : x.z32;
  for (int64_t t = 0; t < x.m; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      float out = 0.f;
      for (int64_t j = 0; j < spans; ++j) {
        int32_t acc = 0;
        for (int64_t k = j * span; k < (j + 1) * span; ++k)
          acc += (int32_t(x.u[size_t(t * cols + k)]) - 128) * levels[r * cols + k];
        const size_t f = size_t((r * cols + j * span) / 16);
        out = std::fma(float(acc), a16[f] * x.d[size_t(t * nd + j * span / 32)], out);
        if (c16) out = std::fma(-c16[f], z[size_t(t * spans + j)], out);
      }
      y[t * ldy + r] = out;
    }
}

}  // namespace qf::kernels
