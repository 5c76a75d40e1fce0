// ggml's 32-weight block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1) and the non-linear 4-bit
// ones (IQ4_NL, IQ4_XS): reference row encoders and decoders, plain loops.
// Contract: bytes and floats bit-identical to ggml-quants.c: quantize_row_X_ref without
// importance, quantize_row_X_impl / quantize_iq4_* with it, dequantize_row_X (see
// ggml_blocks.h). Layouts: the Block structs of ggml_types.h.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>

#include "formats/ggml_blocks_impl.h"

namespace qf::ggml {
namespace {

constexpr int kQ = 32;  // weights per block

// Weights of the importance paths: importance * sqrt(sigma2 + x^2), sigma2 the row's mean x^2
// (so a weight near zero still counts in proportion to the row's scale).
float RowSigma2(const float* x, int64_t cols) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < cols; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / float(cols);
}
void ImportanceWeights(const float* xb, const float* qw, float sigma2, int n, float* weight) {
  for (int j = 0; j < n; ++j) weight[j] = qw[j] * std::sqrt(sigma2 + xb[j] * xb[j]);
}

// 4-bit codes L[32] -> 16 bytes (code j low nibble, code j + 16 high nibble).
void PackNibbles(const uint8_t* L, uint8_t* qs) {
  for (int j = 0; j < 16; ++j) qs[j] = uint8_t(L[j] | (L[j + 16] << 4));
}
// 5-bit codes L[32] -> low nibbles in qs, fifth bits in qh (bit j for code j).
void PackFiveBits(const uint8_t* L, U32& qh, uint8_t* qs) {
  uint32_t h = 0;
  for (int j = 0; j < 16; ++j) {
    qs[j] = uint8_t((L[j] & 0x0F) | ((L[j + 16] & 0x0F) << 4));
    h |= uint32_t((L[j] & 0x10u) >> 4) << j;
    h |= uint32_t((L[j + 16] & 0x10u) >> 4) << (j + 16);
  }
  qh.Set(h);
}
void UnpackFiveBits(const U32& qh, const uint8_t* qs, int* L) {
  const uint32_t h = qh.Get();
  for (int j = 0; j < 16; ++j) {
    L[j] = (qs[j] & 0x0F) | int(((h >> j) << 4) & 0x10);
    L[j + 16] = (qs[j] >> 4) | int((h >> (j + 12)) & 0x10);
  }
}

// The value of largest magnitude, with its sign (the first one on ties).
float SignedAbsMax(const float* x, int n) {
  float amax = 0, max = 0;
  for (int j = 0; j < n; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

// Reference rounding of Q4_0 / Q5_0: d = max / -half, the extreme value at code 0; codes by
// truncating x / d + half + 0.5 (not nearest_int), capped at 2 * half - 1.
void RefSymmetric(const float* x, int half, float* d_out, uint8_t* L) {
  const float d = SignedAbsMax(x, kQ) / float(-half);
  const float id = d ? 1.0f / d : 0.0f;
  const float offset = float(half) + 0.5f;
  for (int j = 0; j < kQ; ++j) {
    L[j] = uint8_t(std::min(2 * half - 1, int(x[j] * id + offset)));
  }
  *d_out = d;
}

// Reference rounding of Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), codes truncate
// (x - min) / d + 0.5.
void RefAffine(const float* x, int nmax, bool cap, float* d_out, float* m_out, uint8_t* L) {
  float min = std::numeric_limits<float>::max(), max = -std::numeric_limits<float>::max();
  for (int j = 0; j < kQ; ++j) {
    if (x[j] < min) min = x[j];
    if (x[j] > max) max = x[j];
  }
  const float d = (max - min) / float(nmax);
  const float id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQ; ++j) {
    const int q = int((x[j] - min) * id + 0.5f);
    L[j] = uint8_t(cap ? std::min(nmax, q) : q);  // Q5_1's reference does not cap
  }
  *d_out = d;
  *m_out = min;
}

}  // namespace

// ---- Q4_0: d; x = d * (q - 8) ------------------------------------------------------------------

void EncodeQ4_0(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ4_0* y = BlocksOf<BlockQ4_0>(out);
  const float sigma2 = importance ? RowSigma2(x, cols) : 0.f;
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) {
    const float* xb = x + ib * kQ;
    uint8_t L[kQ];
    float d;
    if (importance) {
      float weight[kQ];
      int8_t Ls[kQ];
      ImportanceWeights(xb, importance + ib * kQ, sigma2, kQ, weight);
      d = MakeQxQuants(kQ, 8, xb, Ls, weight);
      for (int j = 0; j < kQ; ++j) L[j] = uint8_t(Ls[j]);
    } else {
      RefSymmetric(xb, 8, &d, L);
    }
    y->d.Set(d);
    PackNibbles(L, y->qs);
  }
}

void DecodeQ4_0(const std::byte* in, int64_t cols, float* out) {
  const BlockQ4_0* b = BlocksOf<const BlockQ4_0>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get();
    for (int j = 0; j < 16; ++j) {
      out[j] = float((b->qs[j] & 0x0F) - 8) * d;
      out[j + 16] = float((b->qs[j] >> 4) - 8) * d;
    }
  }
}

namespace {
// Weight i: nibble i % 16 of qs (low for i < 16); x = d * (q - 8).
int FieldsQ4_0(int i, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ4_0, qs) + i % 16), uint8_t(4 * (i / 16)), 4};
  return 1;
}
void LatticeQ4_0(const std::byte* block, GgmlLattice* out) {
  const float d = BlocksOf<const BlockQ4_0>(block)->d.Get();
  for (int i = 0; i < kQ; ++i) out[i] = {d, 0.f};
}
}  // namespace
const GgmlCodeFormat kCodesQ4_0{
    4, 8, nullptr, 0, FieldsQ4_0, LatticeQ4_0, 32, offsetof(BlockQ4_0, d), -1};

// ---- Q4_1: d, m; x = d * q + m ---------------------------------------------------------------

void EncodeQ4_1(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ4_1* y = BlocksOf<BlockQ4_1>(out);
  const float sigma2 = importance ? RowSigma2(x, cols) : 0.f;
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) {
    const float* xb = x + ib * kQ;
    uint8_t L[kQ];
    float d, m;
    if (importance) {
      float weight[kQ], min;
      uint8_t Laux[kQ];
      ImportanceWeights(xb, importance + ib * kQ, sigma2, kQ, weight);
      d = MakeQkxQuants(kQ, 15, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
      m = -min;
    } else {
      RefAffine(xb, 15, true, &d, &m, L);
    }
    y->d.Set(d);
    y->m.Set(m);
    PackNibbles(L, y->qs);
  }
}

void DecodeQ4_1(const std::byte* in, int64_t cols, float* out) {
  const BlockQ4_1* b = BlocksOf<const BlockQ4_1>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get(), m = b->m.Get();
    for (int j = 0; j < 16; ++j) {
      out[j] = float(b->qs[j] & 0x0F) * d + m;
      out[j + 16] = float(b->qs[j] >> 4) * d + m;
    }
  }
}

namespace {
int FieldsQ4_1(int i, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ4_1, qs) + i % 16), uint8_t(4 * (i / 16)), 4};
  return 1;
}
void LatticeQ4_1(const std::byte* block, GgmlLattice* out) {
  const BlockQ4_1* b = BlocksOf<const BlockQ4_1>(block);
  const float d = b->d.Get(), m = b->m.Get();
  for (int i = 0; i < kQ; ++i) out[i] = {d, m};
}
}  // namespace
const GgmlCodeFormat kCodesQ4_1{
    4, 0, nullptr, 0, FieldsQ4_1, LatticeQ4_1, 32, offsetof(BlockQ4_1, d), offsetof(BlockQ4_1, m)};

// ---- Q5_0: d, qh[4]; x = d * (q - 16) -------------------------------------------------------

void EncodeQ5_0(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ5_0* y = BlocksOf<BlockQ5_0>(out);
  const float sigma2 = importance ? RowSigma2(x, cols) : 0.f;
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) {
    const float* xb = x + ib * kQ;
    uint8_t L[kQ];
    float d;
    if (importance) {
      float weight[kQ];
      int8_t Ls[kQ];
      ImportanceWeights(xb, importance + ib * kQ, sigma2, kQ, weight);
      d = MakeQxQuants(kQ, 16, xb, Ls, weight);
      for (int j = 0; j < kQ; ++j) L[j] = uint8_t(Ls[j]);
    } else {
      RefSymmetric(xb, 16, &d, L);
    }
    y->d.Set(d);
    PackFiveBits(L, y->qh, y->qs);
  }
}

void DecodeQ5_0(const std::byte* in, int64_t cols, float* out) {
  const BlockQ5_0* b = BlocksOf<const BlockQ5_0>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get();
    int L[kQ];
    UnpackFiveBits(b->qh, b->qs, L);
    for (int j = 0; j < kQ; ++j) out[j] = float(L[j] - 16) * d;
  }
}

namespace {
// Weight i: low nibble as Q4_0, fifth bit = bit i of qh.
int FieldsQ5_0(int i, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ5_0, qs) + i % 16), uint8_t(4 * (i / 16)), 4};
  f[1] = {uint16_t(offsetof(BlockQ5_0, qh) + i / 8), uint8_t(i % 8), 1};
  return 2;
}
void LatticeQ5_0(const std::byte* block, GgmlLattice* out) {
  const float d = BlocksOf<const BlockQ5_0>(block)->d.Get();
  for (int i = 0; i < kQ; ++i) out[i] = {d, 0.f};
}
}  // namespace
const GgmlCodeFormat kCodesQ5_0{
    5, 16, nullptr, 0, FieldsQ5_0, LatticeQ5_0, 32, offsetof(BlockQ5_0, d), -1};

// ---- Q5_1: d, m, qh[4]; x = d * q + m -------------------------------------------------------

void EncodeQ5_1(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockQ5_1* y = BlocksOf<BlockQ5_1>(out);
  const float sigma2 = importance ? RowSigma2(x, cols) : 0.f;
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) {
    const float* xb = x + ib * kQ;
    uint8_t L[kQ];
    float d, m;
    if (importance) {
      float weight[kQ], min;
      uint8_t Laux[kQ];
      ImportanceWeights(xb, importance + ib * kQ, sigma2, kQ, weight);
      d = MakeQkxQuants(kQ, 31, xb, weight, L, &min, Laux, -0.9f, 0.05f, 36, false);
      m = -min;
    } else {
      RefAffine(xb, 31, false, &d, &m, L);
    }
    y->d.Set(d);
    y->m.Set(m);
    PackFiveBits(L, y->qh, y->qs);
  }
}

void DecodeQ5_1(const std::byte* in, int64_t cols, float* out) {
  const BlockQ5_1* b = BlocksOf<const BlockQ5_1>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get(), m = b->m.Get();
    int L[kQ];
    UnpackFiveBits(b->qh, b->qs, L);
    for (int j = 0; j < kQ; ++j) out[j] = float(L[j]) * d + m;
  }
}

namespace {
int FieldsQ5_1(int i, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ5_1, qs) + i % 16), uint8_t(4 * (i / 16)), 4};
  f[1] = {uint16_t(offsetof(BlockQ5_1, qh) + i / 8), uint8_t(i % 8), 1};
  return 2;
}
void LatticeQ5_1(const std::byte* block, GgmlLattice* out) {
  const BlockQ5_1* b = BlocksOf<const BlockQ5_1>(block);
  const float d = b->d.Get(), m = b->m.Get();
  for (int i = 0; i < kQ; ++i) out[i] = {d, m};
}
}  // namespace
const GgmlCodeFormat kCodesQ5_1{
    5, 0, nullptr, 0, FieldsQ5_1, LatticeQ5_1, 32, offsetof(BlockQ5_1, d), offsetof(BlockQ5_1, m)};

// ---- Q8_0: d; x = d * q (int8). Importance is ignored, as in ggml. ---------------------------

namespace {
// d = absmax / 127 and codes round(x / d) (half away from zero, roundf).
float RefQ8(const float* x, int8_t* q) {
  float amax = 0;
  for (int j = 0; j < kQ; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / float((1 << 7) - 1);
  const float id = d ? 1.0f / d : 0.0f;
  for (int j = 0; j < kQ; ++j) q[j] = int8_t(std::round(x[j] * id));
  return d;
}
}  // namespace

void EncodeQ8_0(const float* x, int64_t cols, const float*, std::byte* out) {
  BlockQ8_0* y = BlocksOf<BlockQ8_0>(out);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) y->d.Set(RefQ8(x + ib * kQ, y->qs));
}

void DecodeQ8_0(const std::byte* in, int64_t cols, float* out) {
  const BlockQ8_0* b = BlocksOf<const BlockQ8_0>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get();
    for (int j = 0; j < kQ; ++j) out[j] = float(b->qs[j]) * d;
  }
}

namespace {
// Weight i: qs[i], an int8 (code ^ 0x80).
int FieldsQ8_0(int i, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockQ8_0, qs) + i), 0, 8};
  return 1;
}
void LatticeQ8_0(const std::byte* block, GgmlLattice* out) {
  const float d = BlocksOf<const BlockQ8_0>(block)->d.Get();
  for (int i = 0; i < kQ; ++i) out[i] = {d, 0.f};
}
}  // namespace
const GgmlCodeFormat kCodesQ8_0{
    8, 128, nullptr, 0x80, FieldsQ8_0, LatticeQ8_0, 32, offsetof(BlockQ8_0, d), -1};

// ---- Q8_1: d, s = d * sum(q); x = d * q. The activation side of Q4_1/Q5_1 dot products. ------

void EncodeQ8_1(const float* x, int64_t cols, const float*, std::byte* out) {
  BlockQ8_1* y = BlocksOf<BlockQ8_1>(out);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) {
    const float d = RefQ8(x + ib * kQ, y->qs);
    int sum = 0;
    for (int j = 0; j < kQ; ++j) sum += y->qs[j];
    y->d.Set(d);
    y->s.Set(float(sum) * d);
  }
}

// ggml has no dequantize_row_q8_1; this is the Q8_0 formula on the same fields.
void DecodeQ8_1(const std::byte* in, int64_t cols, float* out) {
  const BlockQ8_1* b = BlocksOf<const BlockQ8_1>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get();
    for (int j = 0; j < kQ; ++j) out[j] = float(b->qs[j]) * d;
  }
}

// ---- IQ4_NL / IQ4_XS: codes index a fixed non-uniform grid ----------------------------------

const int8_t kValuesIq4nl[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                 1,    13,   25,  38,  53,  69,  89,  113};

namespace {

// Tries of the scale search around the extreme-value scale (ggml_quantize_chunk uses 7 with and
// without importance; only quantize_row_iq4_nl_ref, which writes no files, uses none).
constexpr int kIq4Tries = 7;

// Index of the grid value nearest x (the upper one on an exact tie).
int BestIndexIq4(float x) {
  const int8_t* val = kValuesIq4nl;
  if (x <= float(val[0])) return 0;
  if (x >= float(val[15])) return 15;
  int ml = 0, mu = 15;
  while (mu - ml > 1) {
    const int mav = (ml + mu) / 2;
    if (x < float(val[mav])) {
      mu = mav;
    } else {
      ml = mav;
    }
  }
  return x - float(val[mu - 1]) < float(val[mu]) - x ? mu - 1 : mu;
}

// One super-block of sb weights in sub-blocks of 32 (sb = 32: IQ4_NL, one fp16 scale; sb = 256:
// IQ4_XS, 6-bit signed sub-block scales under an fp16 d). qw: the super-block's importance or
// null (then x^2 weights). Writes d, the packed codes and, for IQ4_XS, scales_h / scales_l.
void QuantizeIq4SuperBlock(int sb, const float* x, const float* qw, F16& dh, uint8_t* q4,
                           U16* scales_h, uint8_t* scales_l) {
  constexpr int kBlock = 32;
  const int nblocks = sb / kBlock;
  uint8_t L[kQK];
  float scales[kQK / kBlock];
  float sigma2 = 0;
  for (int j = 0; j < sb; ++j) sigma2 += x[j] * x[j];
  sigma2 *= 2.f / float(sb);
  std::fill(q4, q4 + sb / 2, uint8_t{0});
  dh.Set(0.f);

  float max_scale = 0, amax_scale = 0;
  for (int ib = 0; ib < nblocks; ++ib) {
    const float* xb = x + ib * kBlock;
    uint8_t* Lb = L + ib * kBlock;
    float weight[kBlock];
    if (qw) {
      ImportanceWeights(xb, qw + ib * kBlock, sigma2, kBlock, weight);
    } else {
      for (int j = 0; j < kBlock; ++j) weight[j] = xb[j] * xb[j];
    }
    const float max = SignedAbsMax(xb, kBlock);
    if (std::fabs(max) < kGroupMaxEps) {
      scales[ib] = 0;
      continue;
    }
    // Start from the scale that maps the extreme value to the grid end -127, refit by least
    // squares, then try 2 * kIq4Tries + 1 neighbouring inverse scales (itry + -127) / max.
    float d = -max / float(kValuesIq4nl[0]);
    float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < kBlock; ++j) {
      const int l = BestIndexIq4(id * xb[j]);
      Lb[j] = uint8_t(l);
      const float q = kValuesIq4nl[l], w = weight[j];
      sumqx += w * q * xb[j];
      sumq2 += w * q * q;
    }
    d = sumqx / sumq2;
    float best = d * sumqx;
    for (int itry = -kIq4Tries; itry <= kIq4Tries; ++itry) {
      id = float(itry + kValuesIq4nl[0]) / max;
      sumqx = sumq2 = 0;
      for (int j = 0; j < kBlock; ++j) {
        const float q = kValuesIq4nl[BestIndexIq4(id * xb[j])], w = weight[j];
        sumqx += w * q * xb[j];
        sumq2 += w * q * q;
      }
      if (sumq2 > 0 && sumqx * sumqx > best * sumq2) {
        d = sumqx / sumq2;
        best = d * sumqx;
      }
    }
    scales[ib] = d;
    if (std::fabs(d) > amax_scale) {
      amax_scale = std::fabs(d);
      max_scale = d;
    }
  }

  if (nblocks > 1) {
    // Sub-block scales as l in [-32, 31] times d = -max_scale / 32; codes refitted to them.
    scales_h->Set(0);
    uint16_t h = 0;
    const float d = -max_scale / 32;
    dh.Set(d);
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < nblocks; ++ib) {
      const int l = std::clamp(NearestInt(id * scales[ib]), -32, 31);
      const float dl = d * float(l);
      const float idl = dl ? 1 / dl : 0.f;
      for (int j = 0; j < kBlock; ++j) {
        L[ib * kBlock + j] = uint8_t(BestIndexIq4(idl * x[ib * kBlock + j]));
      }
      const int u = l + 32;
      if (ib % 2 == 0) {
        scales_l[ib / 2] = uint8_t(u & 0xf);
      } else {
        scales_l[ib / 2] |= uint8_t((u & 0xf) << 4);
      }
      h |= uint16_t((u >> 4) << (2 * (ib % 8)));
    }
    scales_h->Set(h);
  } else {
    dh.Set(scales[0]);
    // Codes refitted to the final scale (an all-zero block: every code at the grid's 1).
    const float id = scales[0] ? 1 / scales[0] : 0;
    for (int j = 0; j < sb; ++j) L[j] = uint8_t(BestIndexIq4(id * x[j]));
  }
  for (int i = 0; i < sb / 32; ++i) PackNibbles(L + 32 * i, q4 + 16 * i);
}

}  // namespace

void EncodeIQ4_NL(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockIQ4_NL* y = BlocksOf<BlockIQ4_NL>(out);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++y) {
    QuantizeIq4SuperBlock(kQ, x + ib * kQ, importance ? importance + ib * kQ : nullptr, y->d, y->qs,
                          nullptr, nullptr);
  }
}

void DecodeIQ4_NL(const std::byte* in, int64_t cols, float* out) {
  const BlockIQ4_NL* b = BlocksOf<const BlockIQ4_NL>(in);
  for (int64_t ib = 0; ib < cols / kQ; ++ib, ++b, out += kQ) {
    const float d = b->d.Get();
    for (int j = 0; j < 16; ++j) {
      out[j] = d * float(kValuesIq4nl[b->qs[j] & 0xf]);
      out[j + 16] = d * float(kValuesIq4nl[b->qs[j] >> 4]);
    }
  }
}

// The layout and lattice of Q4_0 (codes and d where Q4_0 has them).
static_assert(offsetof(BlockIQ4_NL, qs) == offsetof(BlockQ4_0, qs));
const GgmlCodeFormat kCodesIQ4_NL{
    4, 0, kValuesIq4nl, 0, FieldsQ4_0, LatticeQ4_0, 32, offsetof(BlockIQ4_NL, d), -1};

void EncodeIQ4_XS(const float* x, int64_t cols, const float* importance, std::byte* out) {
  BlockIQ4_XS* y = BlocksOf<BlockIQ4_XS>(out);
  for (int64_t ib = 0; ib < cols / kQK; ++ib, ++y) {
    QuantizeIq4SuperBlock(kQK, x + ib * kQK, importance ? importance + ib * kQK : nullptr, y->d,
                          y->qs, &y->scales_h, y->scales_l);
  }
}

namespace {
// Sub-block ib's 6-bit scale ls (the weights are d * (ls - 32) * grid[q]).
int ScaleIq4Xs(const BlockIQ4_XS& b, int ib) {
  return ((b.scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((b.scales_h.Get() >> 2 * ib) & 3) << 4);
}
}  // namespace

void DecodeIQ4_XS(const std::byte* in, int64_t cols, float* out) {
  const BlockIQ4_XS* b = BlocksOf<const BlockIQ4_XS>(in);
  for (int64_t i = 0; i < cols / kQK; ++i, ++b) {
    const float d = b->d.Get();
    const uint8_t* qs = b->qs;
    for (int ib = 0; ib < kQK / 32; ++ib, qs += 16, out += 32) {
      const float dl = d * float(ScaleIq4Xs(*b, ib) - 32);
      for (int j = 0; j < 16; ++j) {
        out[j] = dl * float(kValuesIq4nl[qs[j] & 0xf]);
        out[j + 16] = dl * float(kValuesIq4nl[qs[j] >> 4]);
      }
    }
  }
}

namespace {
// Weight i: sub-block i / 32's 16 bytes of qs, nibble as IQ4_NL; scale d * (ls - 32).
int FieldsIQ4_XS(int i, GgmlCodeField* f) {
  f[0] = {uint16_t(offsetof(BlockIQ4_XS, qs) + 16 * (i / 32) + i % 16),
          uint8_t(4 * ((i % 32) / 16)), 4};
  return 1;
}
void LatticeIQ4_XS(const std::byte* block, GgmlLattice* out) {
  const BlockIQ4_XS* b = BlocksOf<const BlockIQ4_XS>(block);
  const float d = b->d.Get();
  for (int ib = 0; ib < kQK / 32; ++ib) {
    const float dl = d * float(ScaleIq4Xs(*b, ib) - 32);
    for (int j = 0; j < 32; ++j) out[32 * ib + j] = {dl, 0.f};
  }
}
}  // namespace
const GgmlCodeFormat kCodesIQ4_XS{
    4, 0, kValuesIq4nl, 0, FieldsIQ4_XS, LatticeIQ4_XS, 32, offsetof(BlockIQ4_XS, d), -1};

}  // namespace qf::ggml
