// The integer weight-only kernels of int_dot.h: a decoder to floats (prefill tiles) and the
// fixed-point GEMV (decoding), for each Highway target, and the plain references.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/int_dot.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/aligned_allocator.h>
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/int_dot.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

constexpr int64_t kUnit = 32;  // codes per unit: a half nibble chunk; groups are whole units

// One row of w decoded: out[cols] = scale * (float(code) - zero), as the plain decoder rounds it.
void DecodeRow(const IntRows& w, int64_t r, float* out) {
  const hn::ScalableTag<float> df;
  const hn::Rebind<int32_t, decltype(df)> d32;
  const hn::Rebind<uint8_t, decltype(df)> d8;
  const int64_t NF = int64_t(hn::Lanes(df));
  thread_local std::vector<uint8_t> tmp;
  if (w.interleaved) tmp.resize(w.row_bytes);
  const uint8_t* row = IntRowBytes(w, r, tmp.data());
  auto params = [&](int64_t k) {
    const size_t p = w.Param(r, k / w.group);
    return std::pair{hn::Set(df, w.scales[p]), hn::Set(df, w.zeros[p])};
  };
  if (w.nibbles) {
    for (int64_t c = 0; c < w.cols / kNibbleChunk; ++c) {
      const int64_t k = c * kNibbleChunk;
      const auto [slo, zlo] = params(k);
      const auto [shi, zhi] = params(k + kUnit);
      for (int64_t j = 0; j < kUnit; j += NF) {
        const auto v = hn::PromoteTo(d32, hn::LoadU(d8, row + c * kUnit + j));
        const auto lo = hn::ConvertTo(df, hn::And(v, hn::Set(d32, 15)));
        const auto hi = hn::ConvertTo(df, hn::ShiftRight<4>(v));
        hn::StoreU(hn::Mul(slo, hn::Sub(lo, zlo)), df, out + k + j);
        hn::StoreU(hn::Mul(shi, hn::Sub(hi, zhi)), df, out + k + kUnit + j);
      }
    }
    return;
  }
  int64_t k = 0;
  for (; k + kUnit <= w.cols; k += kUnit) {
    const auto [s, z] = params(k);
    for (int64_t j = 0; j < kUnit; j += NF) {
      const auto v = hn::ConvertTo(df, hn::PromoteTo(d32, hn::LoadU(d8, row + k + j)));
      hn::StoreU(hn::Mul(s, hn::Sub(v, z)), df, out + k + j);
    }
  }
  for (; k < w.cols; ++k) {
    const size_t p = w.Param(r, k / w.group);
    out[k] = w.scales[p] * (float(row[k]) - w.zeros[p]);
  }
}

void DecodeRowsImpl(const IntRows& w, float* out) {
  for (int64_t r = 0; r < w.rows; ++r) DecodeRow(w, r, out + r * w.cols);
}

// The float path: each row decoded (DecodeRow), then FMAs into M tokens' sums.
void GemvFloat(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  const hn::ScalableTag<float> df;
  const int64_t NF = int64_t(hn::Lanes(df));
  std::vector<float> row(static_cast<size_t>(w.cols));
  for (int64_t r = 0; r < w.rows; ++r) {
    DecodeRow(w, r, row.data());
    for (int64_t t = 0; t < m; ++t) {
      const float* xt = x + t * w.cols;
      auto acc = hn::Zero(df);
      int64_t k = 0;
      for (; k + NF <= w.cols; k += NF)
        acc = hn::MulAdd(hn::LoadU(df, row.data() + k), hn::LoadU(df, xt + k), acc);
      float s = hn::GetLane(hn::SumOfLanes(df, acc));
      for (; k < w.cols; ++k) s += row[size_t(k)] * xt[k];
      y[t * ldy + r] = s;
    }
  }
}

#if HWY_TARGET != HWY_SCALAR
using DI = hn::ScalableTag<int16_t>;
using D8 = hn::Rebind<uint8_t, DI>;
using DW = hn::Repartition<int32_t, DI>;
using DFW = hn::Repartition<float, DI>;

// The fixed-point GEMV for M tokens (xq: [M, cols] int16, dx: their steps).
template <int M>
void GemvInt(const IntRows& w, const int16_t* xq, const float* dx, float* y, int64_t ldy) {
  const DI di;
  const D8 d8;
  const DW dw;
  const DFW dfw;
  const int64_t NI = int64_t(hn::Lanes(di));
  const int64_t K = w.cols, groups = K / w.group;
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* row = w.codes + size_t(r) * w.row_bytes;
    const float* sc = w.scales + r * groups;
    const float* ze = w.zeros + r * groups;
    hn::Vec<DFW> facc[M];
    hn::Vec<DW> acc[M], odd[M];
    float tail[M] = {};
    HWY_UNROLL(8)
    for (int t = 0; t < M; ++t) {
      facc[t] = hn::Zero(dfw);
      acc[t] = odd[t] = hn::Zero(dw);
    }
    auto flush = [&](float scale) {
      const auto s = hn::Set(dfw, scale);
      HWY_UNROLL(8)
      for (int t = 0; t < M; ++t) {
        facc[t] = hn::MulAdd(hn::ConvertTo(dfw, hn::Add(acc[t], odd[t])), s, facc[t]);
        acc[t] = odd[t] = hn::Zero(dw);
      }
    };
    auto mac = [&](hn::Vec<DI> q, int64_t k) {
      HWY_UNROLL(8)
      for (int t = 0; t < M; ++t)
        acc[t] =
            hn::ReorderWidenMulAccumulate(dw, q, hn::LoadU(di, xq + t * K + k), acc[t], odd[t]);
    };
    const auto m15 = hn::Set(di, 15);
    const int64_t G = w.group;
    for (int64_t g = 0; g < groups; ++g) {
      const auto z = hn::Set(di, int16_t(ze[g]));
      // Spans of at most kIntGemvSpan weights of the group (per-channel rows: several).
      for (int64_t ks = g * G; ks < (g + 1) * G; ks += kIntGemvSpan) {
        const int64_t ke = std::min((g + 1) * G, ks + kIntGemvSpan);
        if (w.nibbles && G % kNibbleChunk == 0) {  // whole chunks: both halves in this group
          for (int64_t k = ks; k < ke; k += kNibbleChunk) {
            const uint8_t* p = row + k / 2;
            for (int64_t j = 0; j < kUnit; j += NI) {
              const auto v = hn::PromoteTo(di, hn::LoadU(d8, p + j));
              mac(hn::Sub(hn::And(v, m15), z), k + j);
              mac(hn::Sub(hn::ShiftRight<4>(v), z), k + kUnit + j);
            }
          }
        } else if (w.nibbles) {  // groups of 32: one half of a chunk
          const uint8_t* p = row + (ks / kNibbleChunk) * kUnit;
          const bool high = (ks / kUnit) % 2 == 1;
          for (int64_t j = 0; j < kUnit; j += NI) {
            const auto v = hn::PromoteTo(di, hn::LoadU(d8, p + j));
            mac(hn::Sub(high ? hn::ShiftRight<4>(v) : hn::And(v, m15), z), ks + j);
          }
        } else {
          int64_t k = ks;
          for (; k + kUnit <= ke; k += kUnit)
            for (int64_t j = 0; j < kUnit; j += NI)
              mac(hn::Sub(hn::PromoteTo(di, hn::LoadU(d8, row + k + j)), z), k + j);
          // The last cols % 32 weights (per-channel rows only: groups are whole units).
          for (int t = 0; t < M && k < ke; ++t) {
            int64_t sum = 0;
            for (int64_t i = k; i < ke; ++i)
              sum += int64_t(int(row[i]) - int(ze[g])) * xq[t * K + i];
            tail[t] += sc[g] * float(sum);
          }
        }
        flush(sc[g]);
      }
    }
    for (int t = 0; t < M; ++t)
      y[t * ldy + r] = (hn::GetLane(hn::SumOfLanes(dfw, facc[t])) + tail[t]) * dx[t];
  }
}

// The fixed-point GEMV on interleaved nibbles (IntInterleave): per group of 16 rows, kL rows
// per int32 vector; each 2-byte unit of 16 rows widened to int16 lanes, its low nibbles times
// the activation pair k, k + 1 and its high ones times k + 32, k + 33 of the 64-weight chunk, in
// every lane. Per span (a group, at most kIntGemvSpan weights; groups of 32: each half of a
// chunk): sum - zero * Σ xq, exact in int32 (at most 15 * 8191 * 2048 each), then times the
// row's scale into float lanes.
using DR = hn::ScalableTag<int32_t>;
using DR16 = hn::Repartition<int16_t, DR>;
using DRF = hn::Repartition<float, DR>;
constexpr size_t kL = hn::MaxLanes(DR());
constexpr size_t kG = size_t(kIntInterleaveRows) / kL;
static_assert(kL >= 4 && kL <= size_t(kIntInterleaveRows) && kIntInterleaveRows % kL == 0,
              "a group of 16 rows must be a whole number of int32 vectors");

constexpr size_t kPrefetch = 4096;

template <int M>
void GemvInterleaved(const IntRows& w, const int16_t* xq, const float* dx, float* y, int64_t ldy) {
  const DR dr;
  const DR16 d16;
  const DRF df;
  const hn::Rebind<uint8_t, DR16> d8;
  constexpr int64_t R = kIntInterleaveRows, H = kNibbleChunk / 2;
  // Groups of 32 (half a chunk): a chunk's low nibbles are one group, its high ones the next;
  // the loop then steps a chunk at a time and flushes the two halves apart.
  const int64_t K = w.cols, G = w.group, step = std::max(G, kNibbleChunk), halves = K / H;
  const bool half_groups = G < kNibbleChunk;
  // Σ xq over the 32-column halves before each half, per token: a span's sum is a difference.
  thread_local std::vector<int32_t> pre;
  pre.resize(size_t(M * (halves + 1)));
#pragma GCC unroll 8
  for (int t = 0; t < M; ++t) {
    int32_t* pt = pre.data() + t * (halves + 1);
    pt[0] = 0;
    for (int64_t h = 0; h < halves; ++h) {
      int32_t sum = 0;
      for (int64_t k = h * H; k < (h + 1) * H; ++k) sum += xq[t * K + k];
      pt[h + 1] = pt[h] + sum;
    }
  }
  auto pair = [&](int t, int64_t k) {
    int32_t v;
    std::memcpy(&v, xq + t * K + k, 4);
    return hn::BitCast(d16, hn::Set(dr, v));
  };
  const auto m15 = hn::Set(d16, 15);
  for (int64_t r0 = 0; r0 < w.rows; r0 += R) {
    const uint8_t* blk = w.codes + size_t(r0) * w.row_bytes;
    hn::Vec<DRF> acc[kG][M];
#pragma GCC unroll 8
    for (size_t v = 0; v < kG; ++v)
#pragma GCC unroll 8
      for (int t = 0; t < M; ++t) acc[v][t] = hn::Zero(df);
    for (int64_t s0 = 0; s0 < K; s0 += step) {
      for (int64_t ks = s0; ks < s0 + step; ks += kIntGemvSpan) {
        const int64_t ke = std::min(s0 + step, ks + kIntGemvSpan);
        // Low and high nibbles' sums apart (two dependency chains), each with its odd half.
        hn::Vec<DR> sum[2][kG][M], odd[2][kG][M];
#pragma GCC unroll 8
        for (int h = 0; h < 2; ++h)
#pragma GCC unroll 8
          for (size_t v = 0; v < kG; ++v)
#pragma GCC unroll 8
            for (int t = 0; t < M; ++t) sum[h][v][t] = odd[h][v][t] = hn::Zero(dr);
        for (int64_t c = ks / kNibbleChunk; c < ke / kNibbleChunk; ++c) {
          const uint8_t* p = blk + size_t(c * H) * R;  // the chunk's 16 units of 16 rows
          const int64_t k0 = c * kNibbleChunk;
          // One stream of codes: fetched kPrefetch bytes ahead (past the group's end too).
          for (size_t l = 0; l < size_t(H * R); l += 64) hwy::Prefetch(p + kPrefetch + l);
#pragma GCC unroll 4
          for (int64_t u = 0; u < H / 2; ++u) {
            hn::Vec<DR16> xl[M], xh[M];
#pragma GCC unroll 8
            for (int t = 0; t < M; ++t) {
              xl[t] = pair(t, k0 + 2 * u);
              xh[t] = pair(t, k0 + H + 2 * u);
            }
#pragma GCC unroll 8
            for (size_t v = 0; v < kG; ++v) {
              const auto q = hn::PromoteTo(d16, hn::LoadU(d8, p + size_t(u * 2 * R) + 2 * kL * v));
              const auto lo = hn::And(q, m15), hi = hn::ShiftRight<4>(q);
#pragma GCC unroll 8
              for (int t = 0; t < M; ++t) {
                sum[0][v][t] =
                    hn::ReorderWidenMulAccumulate(dr, lo, xl[t], sum[0][v][t], odd[0][v][t]);
                sum[1][v][t] =
                    hn::ReorderWidenMulAccumulate(dr, hi, xh[t], sum[1][v][t], odd[1][v][t]);
              }
            }
          }
        }
        // acc += scale · (Σ level products − zero · Σ xq) of group g over columns [k0, k1),
        // from the nibble halves [h0, h1) of the sums.
        auto flush = [&](int64_t g, int64_t k0, int64_t k1, int h0, int h1) HWY_ATTR {
          const size_t p0 = w.Param(r0, g);  // the 16 rows' parameters side by side
#pragma GCC unroll 8
          for (int t = 0; t < M; ++t) {
            const int32_t* pt = pre.data() + t * (halves + 1);
            const auto sx = hn::Set(dr, pt[k1 / H] - pt[k0 / H]);
#pragma GCC unroll 8
            for (size_t v = 0; v < kG; ++v) {
              auto dot = hn::RearrangeToOddPlusEven(sum[h0][v][t], odd[h0][v][t]);
              if (h1 - h0 == 2)
                dot = hn::Add(dot, hn::RearrangeToOddPlusEven(sum[1][v][t], odd[1][v][t]));
              const auto total = hn::Sub(
                  dot,
                  hn::Mul(w.sym_zero != 0 ? hn::Set(dr, w.sym_zero)
                                          : hn::ConvertTo(dr, hn::LoadU(df, w.zeros + p0 + kL * v)),
                          sx));
              acc[v][t] = hn::MulAdd(hn::ConvertTo(df, total),
                                     hn::LoadU(df, w.scales + p0 + kL * v), acc[v][t]);
            }
          }
        };
        if (half_groups) {  // one chunk [ks, ks + 64): groups ks / 32 and ks / 32 + 1
          flush(ks / G, ks, ks + H, 0, 1);
          flush(ks / G + 1, ks + H, ke, 1, 2);
        } else {
          flush(s0 / G, ks, ke, 0, 2);
        }
      }
    }
#pragma GCC unroll 8
    for (size_t v = 0; v < kG; ++v)
#pragma GCC unroll 8
      for (int t = 0; t < M; ++t)
        hn::StoreU(hn::Mul(acc[v][t], hn::Set(df, dx[t])), df, y + t * ldy + r0 + int64_t(kL * v));
  }
}

void FixedImpl(const IntRows& w, const int16_t* xq, const float* dx, int64_t m, float* y,
               int64_t ldy) {
  const int64_t K = w.cols;
  for (int64_t t0 = 0; t0 < m; t0 += 8) {
    const int64_t n = std::min<int64_t>(8, m - t0);
    const int16_t* q = xq + t0 * K;
    float* yt = y + t0 * ldy;
    switch (n) {
#define QF_INT_GEMV_CASE(M)                       \
  case M:                                         \
    if (w.interleaved)                            \
      GemvInterleaved<M>(w, q, dx + t0, yt, ldy); \
    else                                          \
      GemvInt<M>(w, q, dx + t0, yt, ldy);         \
    break;
      QF_INT_GEMV_CASE(1)
      QF_INT_GEMV_CASE(2)
      QF_INT_GEMV_CASE(3)
      QF_INT_GEMV_CASE(4)
      QF_INT_GEMV_CASE(5)
      QF_INT_GEMV_CASE(6)
      QF_INT_GEMV_CASE(7)
      QF_INT_GEMV_CASE(8)
#undef QF_INT_GEMV_CASE
    }
  }
}

void GemvImpl(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  // Aligned, so that a row's vectors do not straddle cache lines (cols a multiple of 32).
  auto xq = hwy::AllocateAligned<int16_t>(static_cast<size_t>(m * w.cols));
  std::vector<float> dx(static_cast<size_t>(m));
  if (!IntGemvActivations(x, m, w.cols, xq.get(), dx.data())) return GemvFloat(w, x, m, y, ldy);
  FixedImpl(w, xq.get(), dx.data(), m, y, ldy);
}
#else
void FixedImpl(const IntRows& w, const int16_t* xq, const float* dx, int64_t m, float* y,
               int64_t ldy);
void GemvImpl(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  std::vector<int16_t> xq(static_cast<size_t>(m * w.cols));
  std::vector<float> dx(static_cast<size_t>(m));
  if (!IntGemvActivations(x, m, w.cols, xq.data(), dx.data())) return GemvFloat(w, x, m, y, ldy);
  FixedImpl(w, xq.data(), dx.data(), m, y, ldy);
}
void FixedImpl(const IntRows& w, const int16_t* xq, const float* dx, int64_t m, float* y,
               int64_t ldy) {
  // The scalar target has no integer GEMV: the floats back from the fixed-point activations.
  std::vector<float> x(static_cast<size_t>(m * w.cols));
  for (int64_t t = 0; t < m; ++t)
    for (int64_t k = 0; k < w.cols; ++k)
      x[size_t(t * w.cols + k)] = float(xq[t * w.cols + k]) * dx[t];
  GemvFloat(w, x.data(), m, y, ldy);
}
#endif

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(DecodeRowsImpl);
HWY_EXPORT(GemvImpl);
HWY_EXPORT(FixedImpl);

void IntDecodeRows(const IntRows& w, float* out) { HWY_DYNAMIC_DISPATCH(DecodeRowsImpl)(w, out); }

bool IntGemvActivations(const float* x, int64_t m, int64_t k, int16_t* xq, float* dx) {
  constexpr float kMax = float(kIntGemvActivationMax), kTwo23 = 8388608.0f;
  for (int64_t t = 0; t < m; ++t) {
    const float* xt = x + t * k;
    float amax = 0.0f;
    bool finite = true;
#pragma omp simd reduction(max : amax) reduction(&& : finite)
    for (int64_t i = 0; i < k; ++i) {
      const float a = std::fabs(xt[i]);
      finite = finite && a <= std::numeric_limits<float>::max();  // false for inf and NaN
      amax = a > amax ? a : amax;
    }
    if (!finite) return false;
    dx[t] = amax > 0.0f ? amax / kMax : 1.0f;
    const float inv = 1.0f / dx[t];
    int16_t* q = xq + t * k;
    // Round half to even by the 2^23 trick (|x / dx| <= 8191 + an ulp), then clamp.
#pragma omp simd
    for (int64_t i = 0; i < k; ++i) {
      const float v = xt[i] * inv;
      const float r = std::copysign((std::fabs(v) + kTwo23) - kTwo23, v);
      q[i] = int16_t(std::min(std::max(r, -kMax), kMax));
    }
  }
  return true;
}

void IntGemv(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvImpl)(w, x, m, y, ldy);
}

void IntGemvFixed(const IntRows& w, const int16_t* xq, const float* dx, int64_t m, float* y,
                  int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(FixedImpl)(w, xq, dx, m, y, ldy);
}

void IntInterleave(const uint8_t* in, int64_t rows, size_t row_bytes, uint8_t* out) {
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* g = out + size_t(r / kIntInterleaveRows * kIntInterleaveRows) * row_bytes;
    for (size_t b = 0; b < row_bytes; ++b)
      g[IntInterleavedByte(r % kIntInterleaveRows, b)] = in[size_t(r) * row_bytes + b];
  }
}

namespace {
// p [rows, groups] <-> the interleaved rows' order (IntRows::Param).
std::vector<float> PermuteParams(const std::vector<float>& p, int64_t rows, int64_t groups,
                                 bool interleave) {
  IntRows w;
  w.rows = rows;
  w.cols = groups;
  w.group = 1;
  w.interleaved = true;
  std::vector<float> out(p.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t g = 0; g < groups; ++g) {
      const size_t plain = size_t(r * groups + g), inter = w.Param(r, g);
      out[interleave ? inter : plain] = p[interleave ? plain : inter];
    }
  return out;
}
}  // namespace

std::vector<float> IntInterleaveParams(const std::vector<float>& p, int64_t rows, int64_t groups) {
  return PermuteParams(p, rows, groups, true);
}

std::vector<float> IntDeinterleaveParams(const std::vector<float>& p, int64_t rows,
                                         int64_t groups) {
  return PermuteParams(p, rows, groups, false);
}

void IntDecodeRowsRef(const IntRows& w, float* out) {
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t k = 0; k < w.cols; ++k) {
      const size_t p = w.Param(r, k / w.group);
      out[r * w.cols + k] = w.scales[p] * (float(IntCode(w, r, k)) - w.zeros[p]);
    }
}

void IntGemvRef(const IntRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  std::vector<float> row(static_cast<size_t>(w.rows * w.cols));
  IntDecodeRowsRef(w, row.data());
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0.0;
      for (int64_t k = 0; k < w.cols; ++k)
        s += double(row[size_t(r * w.cols + k)]) * double(x[t * w.cols + k]);
      y[t * ldy + r] = float(s);
    }
}

}  // namespace qf::kernels
#endif
