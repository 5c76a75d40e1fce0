// Highway kernels of ggml's non-uniform 4-bit blocks (IQ4_NL, IQ4_XS: codes index the grid
// kValuesIq4nl) and their 16-row interleaved GEMVs, compiled once per SIMD target
// (foreach_target).
// Contract: as ggml_dot.h; the drivers and the dispatch are ggml_dot-inl.h's.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ggml_dot_iq4.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "kernels/cpu/ggml_dot-inl.h"
#include "kernels/cpu/ggml_dot_family.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {

// IQ4's grid values of the N low (hi = false) or high nibbles at p.
HWY_INLINE VI Iq4Values(const uint8_t* p, bool hi) {
#if HWY_TARGET == HWY_SCALAR
  const int q = hi ? p[0] >> 4 : p[0] & 0xF;
  return I(ggml::kValuesIq4nl[q]);
#else
  const hn::Rebind<uint8_t, DI> du8;
  const hn::Rebind<int8_t, DI> di8;
  const hn::Full128<int8_t> d16;
  const auto lut = hn::LoadU(d16, ggml::kValuesIq4nl);
  auto idx = hn::LoadU(du8, p);
  idx = hi ? hn::ShiftRight<4>(idx) : hn::And(idx, hn::Set(du8, uint8_t(0xF)));
  const auto v = hn::TableLookupBytes(lut, hn::BitCast(di8, idx));
  return hn::PromoteTo(DI(), v);
#endif
}

#if HWY_TARGET != HWY_SCALAR
// The interleaved kernels (see ggml_dot_legacy.cc's Q4_0x16 for Block's contract). Codes in
// 2-byte units of 16 rows, as Q4_0x16's, looked up in the grid as bytes before widening.
// kL rows' code pair unit at p: the grid values of the low nibbles (lo) and the high ones (hi).
HWY_INLINE void GridPairs(const uint8_t* p, VR16& lo, VR16& hi) {
  const hn::Rebind<uint8_t, DR16> du8;
  const hn::Rebind<int8_t, DR16> di8;
  // The grid in every 128-bit block of the indices (a vector of up to 16 bytes uses the first).
  const auto look = [&](hn::Vec<decltype(du8)> idx) HWY_ATTR {
    if constexpr (hn::MaxLanes(du8) > 16) {
      return hn::TableLookupBytes(hn::LoadDup128(di8, ggml::kValuesIq4nl), hn::BitCast(di8, idx));
    } else {
      return hn::TableLookupBytes(hn::LoadU(hn::Full128<int8_t>(), ggml::kValuesIq4nl),
                                  hn::BitCast(di8, idx));
    }
  };
  const auto raw = hn::LoadU(du8, p);
  lo = hn::PromoteTo(DR16(), look(hn::And(raw, hn::Set(du8, 15))));
  hi = hn::PromoteTo(DR16(), look(hn::ShiftRight<4>(raw)));
}

// Σ grid[q] xq over units c < 8 at q (weights 2c, 2c+1 | 16 + 2c, 17 + 2c of a run of 32 at k0),
// into s (sums, odd halves): |.| <= 127 * 8191 * 32.
template <int M>
HWY_INLINE void GridRun(const uint8_t* q, const IActs& x, size_t k0, VR (&s)[2][kG][M]) {
  HWY_UNROLL(8)
  for (size_t c = 0; c < 8; ++c) {
    VR16 xl[M], xh[M];
    for (int t = 0; t < M; ++t) {
      xl[t] = x.Pair(t, k0 + 2 * c);
      xh[t] = x.Pair(t, k0 + 16 + 2 * c);
    }
    for (size_t g = 0; g < kG; ++g) {
      VR16 lo, hi;
      GridPairs(q + 32 * c + 2 * kL * g, lo, hi);
      for (int t = 0; t < M; ++t) {
        MulPairs(lo, xl[t], s[0][g][t], s[1][g][t]);
        MulPairs(hi, xh[t], s[0][g][t], s[1][g][t]);
      }
    }
  }
}

struct IQ4_NLx16 {  // [d x16][unit c: codes 2c, 2c+1 x16] c < 8
  static constexpr size_t kW = 32, kB = sizeof(ggml::BlockIQ4_NL);
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    VR s[2][kG][M];
    ZeroAll(s);
    GridRun<M>(p + 32, x, 0, s);
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      for (int t = 0; t < M; ++t)
        acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), Total(s[0][g][t], s[1][g][t])), d, acc[g][t]);
    }
  }
};

// [d x16][scales_h x16][scales_l 0-1 x16][scales_l 2-3 x16][unit u: codes 2u, 2u+1 x16, u < 64]:
// sub-block ib's codes are units 8 ib ..; per sub-block Σ grid[q] xq times (ls - 32) in int32
// (|.| <= 127 * 8191 * 32 * 32 < 2^31), the eight summed in float; then acc += d Σ.
struct IQ4_XSx16 {
  static constexpr size_t kW = 256, kB = sizeof(ggml::BlockIQ4_XS);
  // kL rows' 16-bit fields at p, as int32 lanes.
  static HWY_INLINE VR RowU16(const uint8_t* p) {
    return hn::PromoteTo(
        DR(), hn::LoadU(hn::Rebind<uint16_t, DR>(), reinterpret_cast<const uint16_t*>(p)));
  }
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    VRF sum[kG][M];
    for (size_t g = 0; g < kG; ++g)
      for (int t = 0; t < M; ++t) sum[g][t] = hn::Zero(DRF());
    HWY_UNROLL(1)
    for (size_t ib = 0; ib < 8; ++ib) {
      VR s[2][kG][M];
      ZeroAll(s);
      GridRun<M>(p + 128 + 8 * 32 * ib, x, 32 * ib, s);
      for (size_t g = 0; g < kG; ++g) {
        // ls = scales_l's nibble ib | scales_h's bits 2 ib, 2 ib + 1 at bits 4-5; minus 32.
        const VR sl = RowU16(p + 64 + 32 * (ib / 4) + 2 * kL * g);
        const VR sh = RowU16(p + 32 + 2 * kL * g);
        const VR ls = hn::Sub(
            hn::Or(
                hn::And(hn::ShiftRightSame(sl, int(4 * (ib % 4))), hn::Set(DR(), 15)),
                hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(sh, int(2 * ib)), hn::Set(DR(), 3)))),
            hn::Set(DR(), 32));
        for (int t = 0; t < M; ++t)
          sum[g][t] =
              hn::Add(sum[g][t], hn::ConvertTo(DRF(), hn::Mul(Total(s[0][g][t], s[1][g][t]), ls)));
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      for (int t = 0; t < M; ++t) acc[g][t] = hn::MulAdd(sum[g][t], d, acc[g][t]);
    }
  }
};
#else
struct IQ4_NLx16 {};
struct IQ4_XSx16 {};
#endif

struct BIQ4_NL {  // x = d * grid[q]
  using Block = ggml::BlockIQ4_NL;
  using Interleaved = IQ4_NLx16;
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
      e.Emit(j, Iq4Values(b.qs + j, false), j + 16, Iq4Values(b.qs + j, true), d, 0.f, 0);
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BIQ4_XS {  // 6-bit sub-block scales ls; x = d * (ls - 32) * grid[q]
  using Block = ggml::BlockIQ4_XS;
  using Interleaved = IQ4_XSx16;
  static constexpr size_t kW = 256, kB = sizeof(Block);
  static constexpr bool kMin = false;
  static constexpr bool kSuper = true;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    const uint32_t scales_h = b.scales_h.Get();
    int8_t ls[8];
    HWY_UNROLL(8)
    for (size_t ib = 0; ib < 8; ++ib) {
      ls[ib] = int8_t(
          (((b.scales_l[ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4)) - 32);
    }
    float dl[8];
    const float d = Half(b.d);
    Scales<8>(d, ls, dl);
    const uint8_t* qs = b.qs;
    HWY_UNROLL(8)
    for (size_t ib = 0; ib < 8; ++ib, qs += 16) {
      HWY_UNROLL(4)
      for (size_t j = 0; j < 16; j += N) {
        e.Emit(32 * ib + j, Iq4Values(qs + j, false), 32 * ib + 16 + j, Iq4Values(qs + j, true),
               dl[ib], 0.f, ls[ib]);
      }
    }
    e.End(d, nullptr, 0, 0);
  }
};

void DecodeRowsIQ4(const GgmlRows& w, float* out) { DecodeRowsOf<ggml::GgmlFamily::kIQ4>(w, out); }
void GemvIQ4(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  GemvOf<ggml::GgmlFamily::kIQ4>(w, x, m, y, ldy);
}
GgmlLevelsInfo DecodeLevelsIQ4(const GgmlRows& w, int8_t* q, float* a, float* c) {
  return DecodeLevelsOf<ggml::GgmlFamily::kIQ4>(w, q, a, c);
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(DecodeRowsIQ4);
HWY_EXPORT(GemvIQ4);
HWY_EXPORT(DecodeLevelsIQ4);

namespace ggml_dot {
namespace {

void DecodeRows(const GgmlRows& w, float* out) { HWY_DYNAMIC_DISPATCH(DecodeRowsIQ4)(w, out); }
void Gemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvIQ4)(w, x, m, y, ldy);
}
GgmlLevelsInfo DecodeLevels(const GgmlRows& w, int8_t* q, float* a, float* c) {
  return HWY_DYNAMIC_DISPATCH(DecodeLevelsIQ4)(w, q, a, c);
}
// Both blocks are 2-byte units in file order (IQ4_XS: d, scales_h, scales_l's two halves, then
// the codes), read in that order by IQ4_NLx16 and IQ4_XSx16.
std::vector<Unit> InterleaveUnits(int id) {
  size_t bytes = 0;
  if (uint32_t(id) == ggml::GgmlId("IQ4_NL")) bytes = sizeof(ggml::BlockIQ4_NL);
  if (uint32_t(id) == ggml::GgmlId("IQ4_XS")) bytes = sizeof(ggml::BlockIQ4_XS);
  std::vector<Unit> u;
  for (size_t o = 0; o < bytes; o += 2) u.push_back({o, 2});
  return u;
}

}  // namespace

const Family kIQ4Kernels{DecodeRows, Gemv, InterleaveUnits, DecodeLevels};

}  // namespace ggml_dot
}  // namespace qf::kernels
#endif  // HWY_ONCE
