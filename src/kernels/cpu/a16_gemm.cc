// The 16-bit activations and the paths of a16_gemm.h. Register blocking as q8_gemm.cc's: up to
// two 16-row blocks times up to 6 tokens, each with an int32 accumulator for the current span and
// a float accumulator for the output; vpdpwssd adds two level x activation products per int32
// lane (16 rows per vector).
#include "kernels/cpu/a16_gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/result.h"
#include "kernels/cpu/int8_x86.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace qf::kernels {
namespace {

void Resize(int64_t m, int64_t K, int64_t span, A16Activations& o) {
  QF_CHECK(span > 0 && K % span == 0 && span % 16 == 0,
           "A16 activations: {} columns in spans of {}", K, span);
  o.m = m;
  o.K = K;
  o.span = span;
  o.q.resize(size_t(m * K));
  o.d.resize(size_t(m * K / span));
}

// One span's step and its inverse; false when the inverse overflows (subnormal steps).
bool SpanStep(float amax, float& d, float& id) {
  d = amax / float(kA16Max);
  id = d != 0.f ? 1.f / d : 0.f;
  return id <= std::numeric_limits<float>::max();
}

#if defined(__x86_64__)
// Tokens [t0, t1).
__attribute__((target("avx512f,avx512bw,avx512dq"))) bool QuantizeAvx512(const float* x, int64_t t0,
                                                                         int64_t t1,
                                                                         A16Activations& o) {
  const int64_t K = o.K, S = o.span, ns = K / S;
  const __m512 lim = _mm512_set1_ps(float(kA16Max)), nlim = _mm512_set1_ps(-float(kA16Max));
  for (int64_t t = t0; t < t1; ++t) {
    const float* xt = x + t * K;
    __m512 probe = _mm512_setzero_ps();  // NaN if some x is inf or NaN
    for (int64_t j = 0; j < ns; ++j) {
      const float* xs = xt + j * S;
      __m512 mx = _mm512_setzero_ps();
      for (int64_t k = 0; k < S; k += 16) {
        const __m512 v = _mm512_loadu_ps(xs + k);
        probe = _mm512_fmadd_ps(v, _mm512_setzero_ps(), probe);
        mx = _mm512_max_ps(mx, _mm512_abs_ps(v));
      }
      float d, id;
      if (!SpanStep(_mm512_reduce_max_ps(mx), d, id)) return false;
      o.d[size_t(t * ns + j)] = d;
      const __m512 vid = _mm512_set1_ps(id);
      for (int64_t k = 0; k < S; k += 16) {
        __m512 s = _mm512_mul_ps(_mm512_loadu_ps(xs + k), vid);
        s = _mm512_min_ps(_mm512_max_ps(s, nlim), lim);
        const __m512i q = _mm512_cvtps_epi32(
            _mm512_roundscale_ps(s, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o.q.data() + t * K + j * S + k),
                            _mm512_cvtepi32_epi16(q));
      }
    }
    if (_mm512_reduce_add_ps(probe) != 0.f) return false;
  }
  return true;
}
#endif

// ---- the GEMM paths ----------------------------------------------------------------------------

struct Spans {
  const A16Weights& w;
  const A16Activations& x;
  int64_t K, pairs, spans;
  Spans(const A16Weights& w_, const A16Activations& x_)
      : w(w_), x(x_), K(w_.cols), pairs(w_.cols / 2), spans(w_.spans()) {}
  size_t P(int64_t b, int64_t j) const { return size_t((b * spans + j) * 16); }
  float D(int64_t t, int64_t j) const { return x.d[size_t(t * spans + j)]; }
};

void Portable(const Spans& s, float* y, int64_t ldy) {
  const A16Weights& w = s.w;
  const int64_t S = w.span;
  for (int64_t b = 0; b * 16 < w.rows; ++b) {
    const int16_t* blk = w.levels.data() + b * s.pairs * 32;
    for (int64_t t = 0; t < s.x.m; ++t) {
      const int16_t* a = s.x.q.data() + t * s.K;
      float out[16] = {};
      for (int64_t j = 0; j < s.spans; ++j) {
        int32_t acc[16] = {};
        for (int64_t p = j * S / 2; p < (j + 1) * S / 2; ++p)
          for (int i = 0; i < 16; ++i)
            for (int k = 0; k < 2; ++k)
              acc[i] += int32_t(a[2 * p + k]) * int32_t(blk[p * 32 + 2 * i + k]);
        for (int i = 0; i < 16; ++i)
          out[i] = std::fma(float(acc[i]), w.a[s.P(b, j) + size_t(i)] * s.D(t, j), out[i]);
      }
      for (int i = 0; i < 16 && b * 16 + i < w.rows; ++i) y[t * ldy + b * 16 + i] = out[i];
    }
  }
}

#if defined(__x86_64__)
constexpr int kMaxTokens = 6;

template <int NB, int T>
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void VnniTile(const Spans& s, int64_t b0,
                                                                     int64_t t0, float* y,
                                                                     int64_t ldy) {
  const A16Weights& w = s.w;
  const int16_t* blk = w.levels.data() + b0 * s.pairs * 32;
  const int16_t* u = s.x.q.data() + t0 * s.K;
  const int64_t P = w.span / 2;
  __m512 out[NB][T];
#pragma GCC unroll 8
  for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) out[b][t] = _mm512_setzero_ps();
  for (int64_t j = 0; j < s.spans; ++j) {
    __m512i acc[NB][T];
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b)
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) acc[b][t] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int64_t p = j * P; p < (j + 1) * P; ++p) {
      __m512i wv[NB];
#pragma GCC unroll 8
      for (int b = 0; b < NB; ++b) wv[b] = _mm512_loadu_si512(blk + (b * s.pairs + p) * 32);
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) {
        int32_t two;
        std::memcpy(&two, u + t * s.K + 2 * p, 4);
        const __m512i av = _mm512_set1_epi32(two);
#pragma GCC unroll 8
        for (int b = 0; b < NB; ++b) acc[b][t] = _mm512_dpwssd_epi32(acc[b][t], av, wv[b]);
      }
    }
#pragma GCC unroll 8
    for (int b = 0; b < NB; ++b) {
      const __m512 av = _mm512_loadu_ps(w.a.data() + s.P(b0 + b, j));
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t)
        out[b][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[b][t]),
                                    _mm512_mul_ps(av, _mm512_set1_ps(s.D(t0 + t, j))), out[b][t]);
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

using TileFn = void (*)(const Spans&, int64_t, int64_t, float*, int64_t);

void VnniTiled(const Spans& s, float* y, int64_t ldy) {
  static constexpr TileFn f[2][kMaxTokens] = {{VnniTile<1, 1>, VnniTile<1, 2>, VnniTile<1, 3>,
                                               VnniTile<1, 4>, VnniTile<1, 5>, VnniTile<1, 6>},
                                              {VnniTile<2, 1>, VnniTile<2, 2>, VnniTile<2, 3>,
                                               VnniTile<2, 4>, VnniTile<2, 5>, VnniTile<2, 6>}};
  const int64_t blocks = Int8Rows16(s.w.rows) / 16;
  for (int64_t b = 0; b < blocks;) {
    const int nb = b + 2 <= blocks ? 2 : 1;
    for (int64_t t = 0; t < s.x.m; t += kMaxTokens) {
      const int nt = int(std::min<int64_t>(kMaxTokens, s.x.m - t));
      f[nb - 1][nt - 1](s, b, t, y, ldy);
    }
    b += nb;
  }
}
#endif

// Row r of w as levels code - zero (rows as stored: PackA16Weights unpacks interleaved rows a
// unit of 16 rows at a time).
void RowLevels(const IntRows& w, int64_t r, int16_t* out) {
  const int64_t K = w.cols, groups = K / w.group;
  const uint8_t* row = w.codes + size_t(r) * w.row_bytes;
  auto zero = [&](int64_t k) { return int16_t(w.zeros[w.Param(r, k / w.group)]); };
  if (w.nibbles) {
    constexpr int64_t H = kNibbleChunk / 2;
    for (int64_t c = 0; c < K / kNibbleChunk; ++c) {
      const int64_t k = c * kNibbleChunk;
      const int16_t zlo = zero(k), zhi = zero(k + H);
      const uint8_t* p = row + c * H;
      for (int64_t j = 0; j < H; ++j) {
        out[k + j] = int16_t((p[j] & 15) - zlo);
        out[k + H + j] = int16_t((p[j] >> 4) - zhi);
      }
    }
    return;
  }
  for (int64_t g = 0; g < groups; ++g) {
    const int16_t z = zero(g * w.group);
    for (int64_t k = g * w.group; k < (g + 1) * w.group; ++k) out[k] = int16_t(row[k] - z);
  }
}

}  // namespace

int64_t A16Span(int64_t cols, int64_t group) {
  for (int64_t s : {128, 64, 32})
    if (cols % s == 0 && group % s == 0) return s;
  return 0;
}

bool QuantizeA16Ref(const float* x, int64_t m, int64_t K, int64_t span, A16Activations& o) {
  Resize(m, K, span, o);
  const int64_t ns = K / span;
  for (int64_t t = 0; t < m; ++t)
    for (int64_t j = 0; j < ns; ++j) {
      const float* xs = x + t * K + j * span;
      float amax = 0.f;
      for (int64_t k = 0; k < span; ++k) {
        if (!std::isfinite(xs[k])) return false;
        amax = std::max(amax, std::fabs(xs[k]));
      }
      float d, id;
      if (!SpanStep(amax, d, id)) return false;
      o.d[size_t(t * ns + j)] = d;
      for (int64_t k = 0; k < span; ++k)
        o.q[size_t(t * K + j * span + k)] =
            int16_t(std::nearbyint(std::clamp(xs[k] * id, -float(kA16Max), float(kA16Max))));
    }
  return true;
}

bool QuantizeA16(const float* x, int64_t m, int64_t K, int64_t span, A16Activations& o) {
#if defined(__x86_64__)
  if (int8_x86::HasAvx512Quantize()) {
    Resize(m, K, span, o);
    return int8_x86::ForTokenParts(
        m, [&](int64_t t0, int64_t t1) { return QuantizeAvx512(x, t0, t1, o); });
  }
#endif
  return QuantizeA16Ref(x, m, K, span, o);
}

void PackA16Weights(const IntRows& w, int64_t span, A16Weights& out) {
  QF_CHECK(span > 0 && w.cols % span == 0 && w.group % span == 0,
           "A16 GEMM: {} columns in groups of {} with spans of {}", w.cols, w.group, span);
  const int64_t K = w.cols, pairs = K / 2, spans = K / span, groups = K / w.group;
  const int64_t R16 = Int8Rows16(w.rows);
  out.rows = w.rows;
  out.cols = K;
  out.span = span;
  out.levels.resize(size_t(R16 * K));
  out.a.resize(size_t(R16 * spans));
  if (w.rows < R16) {  // the last block's padding rows: zero levels and scales
    const int64_t b = w.rows / 16;
    std::fill(out.levels.begin() + b * pairs * 32, out.levels.end(), int16_t(0));
    std::fill(out.a.begin() + b * spans * 16, out.a.end(), 0.f);
  }
  if (w.interleaved) {  // whole 16-row groups: each 2-byte unit of 16 rows is two pairs
    constexpr int64_t H = kNibbleChunk / 2;
    for (int64_t b = 0; b < R16 / 16; ++b) {
      const uint8_t* blk = w.codes + size_t(b * 16) * w.row_bytes;
      int16_t* dst = out.levels.data() + b * pairs * 32;
      // A chunk's low nibbles are columns [k, k + 32), its high ones [k + 32, k + 64): with
      // groups of 32 two groups, each with its own zero points.
      auto zeros = [&](int64_t k, int16_t* zz) {
        const size_t p0 = w.Param(b * 16, k / w.group);  // the 16 rows' parameters side by side
        for (int e = 0; e < 32; ++e) zz[e] = int16_t(w.zeros[p0 + size_t(e / 2)]);
      };
      int16_t zlo[32], zhi[32];
      for (int64_t k = 0; k < K; k += kNibbleChunk) {
        zeros(k, zlo);
        zeros(k + H, zhi);
        for (int64_t u = 0; u < H / 2; ++u) {
          const uint8_t* src = blk + size_t(k / 2 + 2 * u) * 16;
          int16_t* lo = dst + (k / 2 + u) * 32;
          int16_t* hi = dst + (k / 2 + H / 2 + u) * 32;
#pragma omp simd
          for (int e = 0; e < 32; ++e) {
            lo[e] = int16_t((src[e] & 15) - zlo[e]);
            hi[e] = int16_t((src[e] >> 4) - zhi[e]);
          }
        }
      }
      for (int64_t g = 0; g < groups; ++g)
        for (int64_t j = g * w.group / span; j < (g + 1) * w.group / span; ++j)
          std::memcpy(out.a.data() + (b * spans + j) * 16, w.scales + w.Param(b * 16, g),
                      16 * sizeof(float));
    }
    return;
  }
  thread_local std::vector<int16_t> row;
  row.resize(size_t(K));
  for (int64_t r = 0; r < w.rows; ++r) {
    const int64_t b = r / 16, i = r % 16;
    RowLevels(w, r, row.data());
    int16_t* dst = out.levels.data() + b * pairs * 32 + 2 * i;
    for (int64_t p = 0; p < pairs; ++p) std::memcpy(dst + p * 32, row.data() + 2 * p, 4);
    for (int64_t j = 0; j < spans; ++j)
      out.a[size_t((b * spans + j) * 16 + i)] = w.scales[w.Param(r, j * span / w.group)];
  }
}

std::vector<Int8Path> A16Paths() {
  std::vector<Int8Path> p = {Int8Path::kPortable};
  const std::vector<Int8Path> all = Int8Paths();
  if (all.back() == Int8Path::kAvx512Vnni) p.push_back(Int8Path::kAvx512Vnni);
  return p;
}

bool A16GemmFast() {
  static const bool fast = A16Paths().back() == Int8Path::kAvx512Vnni;
  return fast;
}

void A16GemmOn(Int8Path path, const A16Weights& w, const A16Activations& x, float* y, int64_t ldy) {
  QF_CHECK(x.K == w.cols && x.span == w.span,
           "A16 GEMM: activations of {} columns in spans of {} for weights of {} in spans of {}",
           x.K, x.span, w.cols, w.span);
  const Spans s(w, x);
#if defined(__x86_64__)
  if (path == Int8Path::kAvx512Vnni) return VnniTiled(s, y, ldy);
#endif
  Portable(s, y, ldy);
}

void A16Gemm(const A16Weights& w, const A16Activations& x, float* y, int64_t ldy) {
  static const Int8Path best = A16Paths().back();
  A16GemmOn(best, w, x, y, ldy);
}

void A16GemmRef(const IntRows& w, const A16Activations& x, float* y, int64_t ldy) {
  const int64_t K = w.cols, S = x.span, spans = K / S;
  for (int64_t t = 0; t < x.m; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      float out = 0.f;
      for (int64_t j = 0; j < spans; ++j) {
        const size_t g = w.Param(r, j * S / w.group);
        int32_t acc = 0;
        for (int64_t k = j * S; k < (j + 1) * S; ++k)
          acc += (IntCode(w, r, k) - int32_t(w.zeros[g])) * int32_t(x.q[size_t(t * K + k)]);
        out = std::fma(float(acc), w.scales[g] * x.d[size_t(t * spans + j)], out);
      }
      y[t * ldy + r] = out;
    }
}

}  // namespace qf::kernels
