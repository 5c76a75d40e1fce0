// ggml's k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, and Q8_K, the activation partner): reference
// row encoders and decoders over super-blocks of 256 weights, plain loops.
// Contract: bytes and floats bit-identical to ggml-quants.c: quantize_row_X_ref without
// importance, quantize_row_X_impl with it, dequantize_row_X (see ggml_blocks.h). Each encoder
// fits sub-block scales (and mins), quantizes those under fp16 super-block scales, then
// re-rounds every weight to the scales as stored (the "requantize" step).
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>

#include "formats/ggml_blocks_impl.h"

namespace qf::ggml {
namespace {

// Importance weights of the k-quant paths: importance * sqrt(sigma2 + x^2).
void ImportanceWeights(const float* xb, const float* qw, float sigma2, int n, float* weight) {
  for (int j = 0; j < n; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}
float SumSquares(const float* x, int n) {
  float s = 0;
  for (int j = 0; j < n; ++j) s += x[j] * x[j];
  return s;
}

// 2-bit codes L[256] -> qs[64]: byte 32 * h + l holds codes 128 h + l + {0, 32, 64, 96} in bits
// {0-1, 2-3, 4-5, 6-7} (Q2_K, and the low bits of Q3_K).
void PackTwoBits(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] =
          uint8_t(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

// Q4_K / Q5_K: eight 6-bit scales and mins in 12 bytes. Sub-blocks 0-3 in the low 6 bits of
// bytes 0-3 (scale) and 4-7 (min); 4-7 as nibbles in bytes 8-11 with their top 2 bits in the
// high bits of bytes 0-7. Call for j = 0..7 in order.
void PackScaleMinK4(int j, uint8_t ls, uint8_t lm, uint8_t* s) {
  if (j < 4) {
    s[j] = ls;
    s[j + 4] = lm;
  } else {
    s[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
    s[j - 4] |= uint8_t((ls >> 4) << 6);
    s[j] |= uint8_t((lm >> 4) << 6);
  }
}

// Q3_K: sixteen 6-bit scales (stored + 32) in 12 bytes: low nibbles of 0-7 in bytes 0-7, of
// 8-15 in their high nibbles; the top 2 bits of scale j in byte 8 + j % 4 at bit 2 * (j / 4).
// s must start zeroed; call for j = 0..15 in order.
void PackScaleQ3(int j, int l, uint8_t* s) {
  if (j < 8) {
    s[j] = uint8_t(l & 0xF);
  } else {
    s[j - 8] |= uint8_t((l & 0xF) << 4);
  }
  l >>= 4;
  s[j % 4 + 8] |= uint8_t(l << (2 * (j / 4)));
}

}  // namespace

// ---- Q2_K: scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin --------------------------
// x = d * sc * q - dmin * m, q in [0, 3].

void EncodeQ2_K(const float* x, int64_t cols, const float* importance, std::byte* out) {
  constexpr float kQ4Scale = 15.f;
  BlockQ2_K* y = BlocksOf<BlockQ2_K>(out);
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK, ++y) {
    uint8_t* sc = y->scales;
    uint8_t L[kQK], Laux[16];
    float mins[16], scales[16], weight[16];
    if (!importance) {
      float max_scale = 0, max_min = 0;  // the min is subtracted, so scales are positive
      for (int j = 0; j < 16; ++j) {
        for (int l = 0; l < 16; ++l) weight[l] = std::fabs(x[16 * j + l]);
        scales[j] = MakeQkxQuants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.5f,
                                  0.1f, 15, true);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
      }
      if (max_scale > 0) {
        const float iscale = kQ4Scale / max_scale;
        for (int j = 0; j < 16; ++j) sc[j] = uint8_t(NearestInt(iscale * scales[j]));
        y->d.Set(max_scale / kQ4Scale);
      } else {
        std::fill(sc, sc + 16, uint8_t{0});
        y->d.Set(0.f);
      }
      if (max_min > 0) {
        const float iscale = kQ4Scale / max_min;
        for (int j = 0; j < 16; ++j) sc[j] |= uint8_t(NearestInt(iscale * mins[j]) << 4);
        y->dmin.Set(max_min / kQ4Scale);
      } else {
        y->dmin.Set(0.f);
      }
    } else {
      const float sigma2 = SumSquares(x, kQK) / float(kQK);
      const float* qw_block = importance + i * kQK;
      float sw[16];
      for (int j = 0; j < 16; ++j) {
        ImportanceWeights(x + 16 * j, qw_block + 16 * j, sigma2, 16, weight);
        sw[j] = 0;
        for (int l = 0; l < 16; ++l) sw[j] += weight[l];
        scales[j] = MakeQkxQuants(16, 3, x + 16 * j, weight, L + 16 * j, &mins[j], Laux, -0.9f,
                                  0.05f, 36, false);
      }
      uint8_t Ls[16], Lm[16];
      y->d.Set(MakeQpQuants(16, 15, scales, Ls, sw));
      y->dmin.Set(MakeQpQuants(16, 15, mins, Lm, sw));
      for (int j = 0; j < 16; ++j) sc[j] = uint8_t(Ls[j] | (Lm[j] << 4));
    }
    // Re-round to the stored scales; a zero scale keeps the codes of the search.
    const float dq = y->d.Get(), mq = y->dmin.Get();
    for (int j = 0; j < 16; ++j) {
      const float d = dq * float(sc[j] & 0xF);
      if (!d) continue;
      const float dm = mq * float(sc[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = uint8_t(std::clamp(NearestInt((x[16 * j + ii] + dm) / d), 0, 3));
      }
    }
    PackTwoBits(L, y->qs);
  }
}

void DecodeQ2_K(const std::byte* in, int64_t cols, float* out) {
  const BlockQ2_K* b = BlocksOf<const BlockQ2_K>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d = b->d.Get(), min = b->dmin.Get();
    const uint8_t* q = b->qs;
    int is = 0;
    for (int n = 0; n < kQK; n += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2) {
        for (int half = 0; half < 2; ++half) {
          const uint8_t s = b->scales[is++];
          const float dl = d * float(s & 0xF), ml = min * float(s >> 4);
          for (int l = 0; l < 16; ++l) {
            *out++ = dl * float((q[16 * half + l] >> shift) & 3) - ml;
          }
        }
      }
    }
  }
}

namespace {
// Weight w: 2 bits of qs as PackTwoBits; sub-block w / 16: x = d * sc * q - dmin * m.
int FieldsQ2_K(int w, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ2_K, qs) + 32 * (w / 128) + w % 32),
          uint8_t(2 * ((w % 128) / 32)), 2};
  return 1;
}
void LatticeQ2_K(const std::byte* block, GgmlLattice* out) {
  const BlockQ2_K* b = BlocksOf<const BlockQ2_K>(block);
  const float d = b->d.Get(), min = b->dmin.Get();
  for (int w = 0; w < kQK; ++w) {
    const uint8_t s = b->scales[w / 16];
    out[w] = {d * float(s & 0xF), -(min * float(s >> 4))};
  }
}
}  // namespace
const GgmlCodeFormat kCodesQ2_K{2,
                                0,
                                nullptr,
                                0,
                                FieldsQ2_K,
                                LatticeQ2_K,
                                16,
                                offsetof(BlockQ2_K, d),
                                offsetof(BlockQ2_K, dmin)};

// ---- Q3_K: hmask[32], qs[64], scales[12], d. x = d * s * (q - 4), q in [0, 7] ------------------
// (low 2 bits in qs as Q2_K; the third bit of weight w in hmask[w % 32], bit w / 32).

void EncodeQ3_K(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ3_K* y = BlocksOf<BlockQ3_K>(out);
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK, ++y) {
    uint8_t* hmask = y->hmask;
    uint8_t* s = y->scales;
    int8_t L[kQK];
    float scales[16];
    std::fill(s, s + 12, uint8_t{0});
    if (!importance) {
      float max_scale = 0, amax = 0;
      for (int j = 0; j < 16; ++j) {
        scales[j] = MakeQ3Quants(16, 4, x + 16 * j, L + 16 * j);
        if (std::fabs(scales[j]) > amax) {
          amax = std::fabs(scales[j]);
          max_scale = scales[j];
        }
      }
      if (max_scale) {
        const float iscale = -32.f / max_scale;
        for (int j = 0; j < 16; ++j) {
          const int l = int8_t(NearestInt(iscale * scales[j]));  // ggml narrows to int8 first
          PackScaleQ3(j, std::clamp(l, -32, 31) + 32, s);
        }
        y->d.Set(1 / iscale);
      } else {
        y->d.Set(0.f);
      }
    } else {
      const float sigma2 = 2 * SumSquares(x, kQK) / float(kQK);
      float weight[16], sw[16];
      for (int j = 0; j < 16; ++j) {
        ImportanceWeights(x + 16 * j, importance + i * kQK + 16 * j, sigma2, 16, weight);
        float sumw = 0;
        for (int l = 0; l < 16; ++l) sumw += weight[l];
        sw[j] = sumw;
        scales[j] = MakeQxQuants(16, 4, x + 16 * j, L + 16 * j, weight);
      }
      int8_t Ls[16];
      const float d_block = MakeQxQuants(16, 32, scales, Ls, sw);
      for (int j = 0; j < 16; ++j) PackScaleQ3(j, Ls[j], s);
      y->d.Set(d_block);
    }
    const float dq = y->d.Get();
    for (int j = 0; j < 16; ++j) {
      const float d = dq * float(int8_t(ScaleQ3(j, s)));
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = int8_t(std::clamp(NearestInt(x[16 * j + ii] / d), -4, 3) + 4);
      }
    }
    std::fill(hmask, hmask + 32, uint8_t{0});
    uint8_t low[kQK];
    for (int j = 0; j < kQK; ++j) {
      int l = L[j];
      if (l > 3) {
        hmask[j % 32] |= uint8_t(1 << (j / 32));
        l -= 4;
      }
      low[j] = uint8_t(l);
    }
    PackTwoBits(low, y->qs);
  }
}

void DecodeQ3_K(const std::byte* in, int64_t cols, float* out) {
  const BlockQ3_K* b = BlocksOf<const BlockQ3_K>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d_all = b->d.Get();
    const uint8_t* hm = b->hmask;
    const uint8_t* q = b->qs;
    int is = 0;
    uint8_t m = 1;
    for (int n = 0; n < kQK; n += 128, q += 32) {
      for (int shift = 0; shift < 8; shift += 2, m = uint8_t(m << 1)) {
        for (int half = 0; half < 2; ++half) {
          const float dl = d_all * float(ScaleQ3(is++, b->scales));
          for (int l = 0; l < 16; ++l) {
            const int k = 16 * half + l;
            *out++ = dl * float(((q[k] >> shift) & 3) - ((hm[k] & m) ? 0 : 4));
          }
        }
      }
    }
  }
}

namespace {
// Weight w: low 2 bits as Q2_K, third bit in hmask; code = low | high << 2 and
// x = d * s * (code - 4) (a set high bit means no -4).
int FieldsQ3_K(int w, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ3_K, qs) + 32 * (w / 128) + w % 32),
          uint8_t(2 * ((w % 128) / 32)), 2};
  f[1] = {uint16_t(offsetof(BlockQ3_K, hmask) + w % 32), uint8_t(w / 32), 1};
  return 2;
}
void LatticeQ3_K(const std::byte* block, GgmlLattice* out) {
  const BlockQ3_K* b = BlocksOf<const BlockQ3_K>(block);
  const float d_all = b->d.Get();
  for (int w = 0; w < kQK; ++w) out[w] = {d_all * float(ScaleQ3(w / 16, b->scales)), 0.f};
}
}  // namespace
const GgmlCodeFormat kCodesQ3_K{
    3, 4, nullptr, 0, FieldsQ3_K, LatticeQ3_K, 16, offsetof(BlockQ3_K, d), -1};

// ---- Q4_K / Q5_K: d, dmin, scales[12] (6-bit scale and min per 32), [qh[32]], qs[128] ---------
// x = d * sc * q - dmin * m.

namespace {

// The scales, mins and codes of one super-block (nmax 15 or 31): d, dmin and the packed scales
// s of a Q4_K / Q5_K block. L gets the codes re-rounded to the stored scales.
void FitScaleMinK(const float* x, const float* qw, int nmax, F16& dh, F16& dminh, uint8_t* s,
                  uint8_t* L) {
  uint8_t Laux[32];
  float mins[8], scales[8], weights[32];
  if (!qw) {
    // Reference: weights av_x + |x| per sub-block; 6-bit scales of max_scale / 63.
    const float rmin = nmax == 15 ? -1.f : -0.5f;
    const int nstep = nmax == 15 ? 20 : 15;
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      const float av_x = std::sqrt(SumSquares(x + 32 * j, 32) / 32);
      for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
      scales[j] = MakeQkxQuants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin,
                                0.1f, nstep, false);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; ++j) {
      // ggml narrows to uint8 before capping at 63.
      const uint8_t ls = std::min<uint8_t>(63, uint8_t(NearestInt(inv_scale * scales[j])));
      const uint8_t lm = std::min<uint8_t>(63, uint8_t(NearestInt(inv_min * mins[j])));
      PackScaleMinK4(j, ls, lm, s);
    }
    dh.Set(max_scale / 63.f);
    dminh.Set(max_min / 63.f);
  } else {
    const float sigma2 = 2 * SumSquares(x, kQK) / float(kQK);
    float sw[8];
    for (int j = 0; j < 8; ++j) {
      ImportanceWeights(x + 32 * j, qw + 32 * j, sigma2, 32, weights);
      float sumw = 0;
      for (int l = 0; l < 32; ++l) sumw += weights[l];
      sw[j] = sumw;
      scales[j] = MakeQkxQuants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f,
                                0.05f, 36, false);
    }
    uint8_t Ls[8], Lm[8];
    const float d_block = MakeQpQuants(8, 63, scales, Ls, sw);
    const float m_block = MakeQpQuants(8, 63, mins, Lm, sw);
    for (int j = 0; j < 8; ++j) {
      // Q5_K's path caps at 63, Q4_K's does not (the same unless a code wrapped).
      const bool cap = nmax == 31;
      PackScaleMinK4(j, cap ? std::min<uint8_t>(63, Ls[j]) : Ls[j],
                     cap ? std::min<uint8_t>(63, Lm[j]) : Lm[j], s);
    }
    dh.Set(d_block);
    dminh.Set(m_block);
  }
  const float dq = dh.Get(), mq = dminh.Get();
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, s, &sc, &m);
    const float d = dq * float(sc);
    if (!d) continue;
    const float dm = mq * float(m);
    for (int ii = 0; ii < 32; ++ii) {
      L[32 * j + ii] = uint8_t(std::clamp(NearestInt((x[32 * j + ii] + dm) / d), 0, nmax));
    }
  }
}

}  // namespace

void EncodeQ4_K(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ4_K* y = BlocksOf<BlockQ4_K>(out);
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK, ++y) {
    uint8_t L[kQK];
    FitScaleMinK(x, importance ? importance + i * kQK : nullptr, 15, y->d, y->dmin, y->scales, L);
    // Byte 32 * c + l: code 64 c + l in the low nibble, 64 c + 32 + l in the high one.
    uint8_t* q = y->qs;
    for (int j = 0; j < kQK; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) q[l] = uint8_t(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

void DecodeQ4_K(const std::byte* in, int64_t cols, float* out) {
  const BlockQ4_K* b = BlocksOf<const BlockQ4_K>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d = b->d.Get(), min = b->dmin.Get();
    const uint8_t* q = b->qs;
    for (int is = 0; is < 8; is += 2, q += 32) {
      uint8_t sc, m;
      GetScaleMinK4(is, b->scales, &sc, &m);
      const float d1 = d * float(sc), m1 = min * float(m);
      GetScaleMinK4(is + 1, b->scales, &sc, &m);
      const float d2 = d * float(sc), m2 = min * float(m);
      for (int l = 0; l < 32; ++l) *out++ = d1 * float(q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *out++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

namespace {
// Weight w: nibble of qs[32 (w / 64) + w % 32] (low for the first 32 of each 64).
int FieldsQ4_K(int w, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ4_K, qs) + 32 * (w / 64) + w % 32), uint8_t(4 * ((w / 32) % 2)),
          4};
  return 1;
}
// Sub-block w / 32 of a Q4_K / Q5_K block: x = d * sc * q - dmin * m.
static_assert(offsetof(BlockQ5_K, scales) == offsetof(BlockQ4_K, scales));
void LatticeQ4_K(const std::byte* block, GgmlLattice* out) {
  const BlockQ4_K* b = BlocksOf<const BlockQ4_K>(block);
  const float d = b->d.Get(), min = b->dmin.Get();
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    GetScaleMinK4(j, b->scales, &sc, &m);
    const GgmlLattice l{d * float(sc), -(min * float(m))};
    for (int i = 0; i < 32; ++i) out[32 * j + i] = l;
  }
}
}  // namespace
const GgmlCodeFormat kCodesQ4_K{4,
                                0,
                                nullptr,
                                0,
                                FieldsQ4_K,
                                LatticeQ4_K,
                                32,
                                offsetof(BlockQ4_K, d),
                                offsetof(BlockQ4_K, dmin)};

void EncodeQ5_K(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ5_K* y = BlocksOf<BlockQ5_K>(out);
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK, ++y) {
    uint8_t L[kQK];
    FitScaleMinK(x, importance ? importance + i * kQK : nullptr, 31, y->d, y->dmin, y->scales, L);
    // Low nibbles as Q4_K; the fifth bit of code 64 c + l in qh[l] bit 2c, of 64 c + 32 + l in
    // bit 2c + 1.
    uint8_t* qh = y->qh;
    uint8_t* ql = y->qs;
    std::fill(qh, qh + 32, uint8_t{0});
    for (int n = 0, c = 0; n < kQK; n += 64, ++c, ql += 32) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j], l2 = L[n + j + 32];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= uint8_t(1 << (2 * c));
        }
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= uint8_t(2 << (2 * c));
        }
        ql[j] = uint8_t(l1 | (l2 << 4));
      }
    }
  }
}

void DecodeQ5_K(const std::byte* in, int64_t cols, float* out) {
  const BlockQ5_K* b = BlocksOf<const BlockQ5_K>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d = b->d.Get(), min = b->dmin.Get();
    const uint8_t* qh = b->qh;
    const uint8_t* ql = b->qs;
    uint8_t u1 = 1, u2 = 2;
    for (int is = 0; is < 8; is += 2, ql += 32, u1 = uint8_t(u1 << 2), u2 = uint8_t(u2 << 2)) {
      uint8_t sc, m;
      GetScaleMinK4(is, b->scales, &sc, &m);
      const float d1 = d * float(sc), m1 = min * float(m);
      GetScaleMinK4(is + 1, b->scales, &sc, &m);
      const float d2 = d * float(sc), m2 = min * float(m);
      for (int l = 0; l < 32; ++l) *out++ = d1 * float((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *out++ = d2 * float((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
    }
  }
}

namespace {
// Weight w: low nibble as Q4_K, fifth bit w / 32 of qh[w % 32].
int FieldsQ5_K(int w, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ5_K, qs) + 32 * (w / 64) + w % 32), uint8_t(4 * ((w / 32) % 2)),
          4};
  f[1] = {uint16_t(offsetof(BlockQ5_K, qh) + w % 32), uint8_t(w / 32), 1};
  return 2;
}
}  // namespace
const GgmlCodeFormat kCodesQ5_K{5,
                                0,
                                nullptr,
                                0,
                                FieldsQ5_K,
                                LatticeQ4_K,
                                32,
                                offsetof(BlockQ5_K, d),
                                offsetof(BlockQ5_K, dmin)};

// ---- Q6_K: ql[128], qh[64], scales[16] (int8), d. x = d * s * (q - 32), q in [0, 63] ----------
// With importance ggml weights the sub-block fit by the importance alone (no sigma term).

void EncodeQ6_K(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ6_K* y = BlocksOf<BlockQ6_K>(out);
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK, ++y) {
    int8_t L[kQK];
    float scales[16];
    float max_scale = 0, max_abs_scale = 0;
    for (int ib = 0; ib < 16; ++ib) {
      const float* qw = importance ? importance + i * kQK + 16 * ib : nullptr;
      scales[ib] = MakeQxQuants(16, 32, x + 16 * ib, L + 16 * ib, qw);
      if (std::fabs(scales[ib]) > max_abs_scale) {
        max_abs_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      *y = BlockQ6_K{};
      continue;
    }
    int8_t* sc = y->scales;
    const float iscale = -128.f / max_scale;
    y->d.Set(1 / iscale);
    for (int ib = 0; ib < 16; ++ib) sc[ib] = int8_t(std::min(127, NearestInt(iscale * scales[ib])));
    const float dq = y->d.Get();
    for (int j = 0; j < 16; ++j) {
      const float d = dq * float(sc[j]);
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        L[16 * j + ii] = int8_t(std::clamp(NearestInt(x[16 * j + ii] / d), -32, 31) + 32);
      }
    }
    // Per half h of 128: ql[64 h + l] = low nibbles of codes l (low) and l + 64 (high),
    // ql[64 h + 32 + l] those of l + 32 and l + 96; qh[32 h + l] the top 2 bits of l, l + 32,
    // l + 64, l + 96 at bits 0, 2, 4, 6.
    uint8_t* ql = y->ql;
    uint8_t* qh = y->qh;
    for (int j = 0; j < kQK; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const int a = L[j + l], b = L[j + l + 32], c = L[j + l + 64], e = L[j + l + 96];
        ql[l] = uint8_t((a & 0xF) | ((c & 0xF) << 4));
        ql[l + 32] = uint8_t((b & 0xF) | ((e & 0xF) << 4));
        qh[l] = uint8_t((a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6));
      }
    }
  }
}

void DecodeQ6_K(const std::byte* in, int64_t cols, float* out) {
  const BlockQ6_K* b = BlocksOf<const BlockQ6_K>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d = b->d.Get();
    const uint8_t* ql = b->ql;
    const uint8_t* qh = b->qh;
    const int8_t* sc = b->scales;
    for (int n = 0; n < kQK; n += 128, out += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        out[l] = d * float(sc[is]) * float(q1);
        out[l + 32] = d * float(sc[is + 2]) * float(q2);
        out[l + 64] = d * float(sc[is + 4]) * float(q3);
        out[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
    }
  }
}

// Weight w (half n = w / 128, quarter c = (w % 128) / 32, l = w % 32): low nibble of
// ql[64 n + 32 (c % 2) + l] (high nibble for c >= 2), top 2 bits at 2c of qh[32 n + l];
// sub-block w / 16: x = d * sc * (q - 32).
namespace {
int FieldsQ6_K(int w, GgmlCodeField* f) {
  const int n = w / 128, c = (w % 128) / 32, l = w % 32;
  f[0] = {uint16_t(offsetof(BlockQ6_K, ql) + 64 * n + 32 * (c % 2) + l), uint8_t(4 * (c / 2)), 4};
  f[1] = {uint16_t(offsetof(BlockQ6_K, qh) + 32 * n + l), uint8_t(2 * c), 2};
  return 2;
}
void LatticeQ6_K(const std::byte* block, GgmlLattice* out) {
  const BlockQ6_K* b = BlocksOf<const BlockQ6_K>(block);
  const float d = b->d.Get();
  for (int w = 0; w < kQK; ++w) out[w] = {d * float(b->scales[w / 16]), 0.f};
}
}  // namespace
const GgmlCodeFormat kCodesQ6_K{
    6, 32, nullptr, 0, FieldsQ6_K, LatticeQ6_K, 16, offsetof(BlockQ6_K, d), -1};

// ---- Q8_K: d (f32), qs[256] (int8), bsums[16] (int16 sums of 16 codes) ------------------------
// The activation side of k-quant dot products; importance is ignored. An all-zero super-block
// gets d = 0, codes 0 and bsums 0 (ggml leaves its bsums unwritten).

void EncodeQ8_K(const float* x, int64_t cols, const float*, std::byte* out) {
  BlockQ8_K* y = BlocksOf<BlockQ8_K>(out);
  for (int64_t i = 0; i < cols / kQK; ++i, x += kQK, ++y) {
    *y = BlockQ8_K{};
    float max = 0, amax = 0;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    if (!amax) continue;
    const float iscale = -127.f / max;  // -127, not -128: ggml keeps the codes symmetric
    int8_t* qs = y->qs;
    for (int j = 0; j < kQK; ++j) qs[j] = int8_t(std::min(127, NearestInt(iscale * x[j])));
    for (int j = 0; j < 16; ++j) {
      int sum = 0;
      for (int ii = 0; ii < 16; ++ii) sum += qs[16 * j + ii];
      y->bsums[j].Set(uint16_t(int16_t(sum)));
    }
    y->d.Set(BitsFromF32(1 / iscale));
  }
}

void DecodeQ8_K(const std::byte* in, int64_t cols, float* out) {
  const BlockQ8_K* b = BlocksOf<const BlockQ8_K>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d = F32FromBits(b->d.Get());
    for (int j = 0; j < kQK; ++j) *out++ = d * float(b->qs[j]);
  }
}

}  // namespace qf::ggml
