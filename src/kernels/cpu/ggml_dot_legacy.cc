// Highway kernels of ggml's legacy blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and the 16-row
// interleaved GEMVs of all five, compiled once per SIMD target (foreach_target).
// Contract: as ggml_dot.h; the drivers and the dispatch are ggml_dot-inl.h's.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ggml_dot_legacy.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "kernels/cpu/ggml_dot-inl.h"
#include "kernels/cpu/ggml_dot_family.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {

#if HWY_TARGET != HWY_SCALAR
// The interleaved kernels, named <type>x16 (16 rows side by side; not ggml's i-quants).
// Block(p, x, acc): a block column of 16 interleaved rows at p; acc[g][t] += Σ_k w[row][k]
// x[t][k] in float with the block's scales applied (lane = row, before the token's dx).
// Q4_0, Q4_1, Q5_0, Q5_1: [d x16]([m x16])([qh bytes 0-1 x16][qh bytes 2-3 x16])[unit c: codes
// 2c, 2c+1 (weights 2c, 2c+1 | +16) x16] c < 8, the fifth bit of weight j at bit j of qh. Σ q xq
// in int32 (|.| <= 31 * 8191 * 32); then acc += d (Σ q xq - 8 or 16 Σ xq), or with a min
// acc += d Σ q xq + m Σ xq.
template <bool kMin, bool kFive>
struct QLegacyx16 {
  using Plain =
      std::conditional_t<kMin, std::conditional_t<kFive, ggml::BlockQ5_1, ggml::BlockQ4_1>,
                         std::conditional_t<kFive, ggml::BlockQ5_0, ggml::BlockQ4_0>>;
  static constexpr size_t kW = 32, kB = sizeof(Plain);
  static constexpr size_t kQh = kMin ? 64 : 32, kCodes = kQh + (kFive ? 64 : 0);
  // kL rows' 16 fifth bits at p as int16 lanes [bits, bits >> 1] per row: bit 2c of both lanes
  // is then the fifth bit of weight 2c (even lane) and 2c + 1 (odd lane).
  static HWY_INLINE VR16 FifthBitPairs(const uint8_t* p) {
    const VR h = hn::PromoteTo(
        DR(), hn::LoadU(hn::Rebind<uint16_t, DR>(), reinterpret_cast<const uint16_t*>(p)));
    return hn::BitCast(DR16(), hn::Or(h, hn::ShiftLeft<16>(hn::ShiftRight<1>(h))));
  }
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    const VR16 k15 = hn::Set(DR16(), 15), k16 = hn::Set(DR16(), 16);
    VR s[2][kG][M];  // sums and odd halves
    ZeroAll(s);
    VR16 hl[kG], hh[kG];  // the fifth bits of weights 0-15 and 16-31
    if constexpr (kFive) {
      for (size_t g = 0; g < kG; ++g) {
        hl[g] = FifthBitPairs(p + kQh + 2 * kL * g);
        hh[g] = FifthBitPairs(p + kQh + 32 + 2 * kL * g);
      }
    }
    HWY_UNROLL(8)
    for (size_t c = 0; c < 8; ++c) {
      VR16 xl[M], xh[M];
      for (int t = 0; t < M; ++t) {
        xl[t] = x.Pair(t, 2 * c);
        xh[t] = x.Pair(t, 16 + 2 * c);
      }
      for (size_t g = 0; g < kG; ++g) {
        const VR16 v = RowPairs(p + kCodes + 32 * c + 2 * kL * g);
        VR16 lo = hn::And(v, k15), hi = hn::ShiftRight<4>(v);
        if constexpr (kFive) {
          lo = hn::Or(lo, hn::And(hn::ShiftLeft<4>(hn::ShiftRightSame(hl[g], int(2 * c))), k16));
          hi = hn::Or(hi, hn::And(hn::ShiftLeft<4>(hn::ShiftRightSame(hh[g], int(2 * c))), k16));
        }
        for (int t = 0; t < M; ++t) {
          MulPairs(lo, xl[t], s[0][g][t], s[1][g][t]);
          MulPairs(hi, xh[t], s[0][g][t], s[1][g][t]);
        }
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      for (int t = 0; t < M; ++t) {
        const VR sum = Total(s[0][g][t], s[1][g][t]);
        if constexpr (kMin) {
          const VRF m = RowHalves(p + 32 + 2 * kL * g);
          acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), sum), d, acc[g][t]);
          acc[g][t] = hn::MulAdd(hn::Set(DRF(), float(x.Sum32(t, 0))), m, acc[g][t]);
        } else {  // Σ (q - 8 or 16) xq = Σ q xq - (8 or 16) Σ xq, exact in int32
          const VR off = hn::Set(DR(), (kFive ? 16 : 8) * x.Sum32(t, 0));
          acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), hn::Sub(sum, off)), d, acc[g][t]);
        }
      }
    }
  }
};
using Q4_0x16 = QLegacyx16<false, false>;
using Q4_1x16 = QLegacyx16<true, false>;
using Q5_0x16 = QLegacyx16<false, true>;
using Q5_1x16 = QLegacyx16<true, true>;

struct Q8_0x16 {  // [d x16][unit c: codes 2c, 2c+1 x16] c < 16
  static constexpr size_t kW = 32, kB = sizeof(ggml::BlockQ8_0);
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    const hn::Rebind<int8_t, DR16> d8;
    VR s[2][kG][M];
    ZeroAll(s);
    HWY_UNROLL(16)
    for (size_t c = 0; c < 16; ++c) {
      VR16 xc[M];
      for (int t = 0; t < M; ++t) xc[t] = x.Pair(t, 2 * c);
      for (size_t g = 0; g < kG; ++g) {
        const VR16 v = hn::PromoteTo(
            DR16(), hn::LoadU(d8, reinterpret_cast<const int8_t*>(p + 32 + 32 * c + 2 * kL * g)));
        for (int t = 0; t < M; ++t) MulPairs(v, xc[t], s[0][g][t], s[1][g][t]);
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      for (int t = 0; t < M; ++t)
        acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), Total(s[0][g][t], s[1][g][t])), d, acc[g][t]);
    }
  }
};
#else
struct Q4_0x16 {};
struct Q4_1x16 {};
struct Q5_0x16 {};
struct Q5_1x16 {};
struct Q8_0x16 {};
#endif

struct BQ4_0 {  // x = (q - 8) * d
  using Block = ggml::BlockQ4_0;
  using Interleaved = Q4_0x16;
  static constexpr size_t kW = 32, kB = sizeof(Block);
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    const float d = Half(b.d);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b.qs + j);
      e.Emit(j, hn::Sub(hn::And(q, I(15)), I(8)), j + 16, hn::Sub(hn::ShiftRight<4>(q), I(8)), d,
             0.f, 0);
    }
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BQ4_1 {  // x = q * d + m
  using Block = ggml::BlockQ4_1;
  using Interleaved = Q4_1x16;
  static constexpr size_t kW = 32, kB = sizeof(Block);
  static constexpr bool kMin = true;
  static constexpr bool kSuper = false;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    const float d = Half(b.d), m = Half(b.m);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b.qs + j);
      e.Emit(j, hn::And(q, I(15)), j + 16, hn::ShiftRight<4>(q), d, -m, 0);
    }
    const float c = -m;
    e.End(0.f, &c, 1, 32);
  }
};

// The fifth bits of weights j .. j + N - 1 of a Q5 block (bit j of qh), as 16 or 0.
alignas(64) constexpr uint16_t kBit[16] = {1,   2,   4,    8,    16,   32,   64,    128,
                                           256, 512, 1024, 2048, 4096, 8192, 16384, 32768};
HWY_INLINE VI FifthBits(uint32_t qh, size_t j) {
  const DU du;
  const uint16_t half = uint16_t(j < 16 ? qh : qh >> 16);
  const auto set = hn::And(hn::Set(du, half), hn::LoadU(du, kBit + j % 16));
  return hn::BitCast(DI(),
                     hn::IfThenElseZero(hn::Ne(set, hn::Zero(du)), hn::Set(du, uint16_t(16))));
}

struct BQ5_0 {  // x = (q - 16) * d
  using Block = ggml::BlockQ5_0;
  using Interleaved = Q5_0x16;
  static constexpr size_t kW = 32, kB = sizeof(Block);
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    const float d = Half(b.d);
    const uint32_t qh = b.qh.Get();
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b.qs + j);
      const VI lo = hn::Or(hn::And(q, I(15)), FifthBits(qh, j));
      const VI hi = hn::Or(hn::ShiftRight<4>(q), FifthBits(qh, j + 16));
      e.Emit(j, hn::Sub(lo, I(16)), j + 16, hn::Sub(hi, I(16)), d, 0.f, 0);
    }
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BQ5_1 {  // x = q * d + m
  using Block = ggml::BlockQ5_1;
  using Interleaved = Q5_1x16;
  static constexpr size_t kW = 32, kB = sizeof(Block);
  static constexpr bool kMin = true;
  static constexpr bool kSuper = false;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    const float d = Half(b.d), m = Half(b.m);
    const uint32_t qh = b.qh.Get();
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b.qs + j);
      e.Emit(j, hn::Or(hn::And(q, I(15)), FifthBits(qh, j)), j + 16,
             hn::Or(hn::ShiftRight<4>(q), FifthBits(qh, j + 16)), d, -m, 0);
    }
    const float c = -m;
    e.End(0.f, &c, 1, 32);
  }
};

struct BQ8_0 {  // x = q * d, q int8
  using Block = ggml::BlockQ8_0;
  using Interleaved = Q8_0x16;
  static constexpr size_t kW = 32, kB = sizeof(Block);
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    const float d = Half(b.d);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N)
      e.Emit(j, SignedBytes(b.qs + j), j + 16, SignedBytes(b.qs + 16 + j), d, 0.f, 0);
    e.End(0.f, nullptr, 0, 0);
  }
};

void DecodeRowsLegacy(const GgmlRows& w, float* out) {
  DecodeRowsOf<ggml::GgmlFamily::kLegacy>(w, out);
}
void GemvLegacy(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  GemvOf<ggml::GgmlFamily::kLegacy>(w, x, m, y, ldy);
}
GgmlLevelsInfo DecodeLevelsLegacy(const GgmlRows& w, int8_t* q, float* a, float* c) {
  return DecodeLevelsOf<ggml::GgmlFamily::kLegacy>(w, q, a, c);
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(DecodeRowsLegacy);
HWY_EXPORT(GemvLegacy);
HWY_EXPORT(DecodeLevelsLegacy);

namespace ggml_dot {
namespace {

void DecodeRows(const GgmlRows& w, float* out) { HWY_DYNAMIC_DISPATCH(DecodeRowsLegacy)(w, out); }
void Gemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvLegacy)(w, x, m, y, ldy);
}
GgmlLevelsInfo DecodeLevels(const GgmlRows& w, int8_t* q, float* a, float* c) {
  return HWY_DYNAMIC_DISPATCH(DecodeLevelsLegacy)(w, q, a, c);
}

// Every legacy block is 2-byte units in file order: d (m) (qh's two halves), then the codes in
// pairs (Q4/Q5: weights 2c, 2c + 1 | 16 + 2c, 17 + 2c).
std::vector<Unit> InterleaveUnits(int id) {
  const auto pairs = [](size_t bytes) {
    std::vector<Unit> u;
    for (size_t o = 0; o < bytes; o += 2) u.push_back({o, 2});
    return u;
  };
  switch (uint32_t(id)) {
    case ggml::GgmlId("Q4_0"):
      return pairs(sizeof(ggml::BlockQ4_0));
    case ggml::GgmlId("Q4_1"):
      return pairs(sizeof(ggml::BlockQ4_1));
    case ggml::GgmlId("Q5_0"):
      return pairs(sizeof(ggml::BlockQ5_0));
    case ggml::GgmlId("Q5_1"):
      return pairs(sizeof(ggml::BlockQ5_1));
    case ggml::GgmlId("Q8_0"):
      return pairs(sizeof(ggml::BlockQ8_0));
    default:
      return {};
  }
}

}  // namespace

const Family kLegacyKernels{DecodeRows, Gemv, InterleaveUnits, DecodeLevels};

}  // namespace ggml_dot
}  // namespace qf::kernels
#endif  // HWY_ONCE
