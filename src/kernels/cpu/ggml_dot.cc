// Highway implementations of ggml_dot.h, compiled once per SIMD target (foreach_target).
// Built with -ffp-contract=off (CMakeLists.txt): the decoders' products and sums must round
// exactly as the reference decoders' do; the GEMV's fused multiply-adds are explicit (MulAdd).
// Vectors hold N = min(float lanes, 16) weights, so every sub-block (16 or 32 weights) is a whole
// number of vectors: on AVX-512 the int16 levels fill 256-bit registers, as in llama.cpp's AVX2
// kernels, and the float accumulators 256 or 512 bits.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ggml_dot.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"
#include "kernels/cpu/ggml_dot.h"

#ifndef QF_GGML_DOT_ONCE
#define QF_GGML_DOT_ONCE
#define QF_ALWAYS_INLINE __attribute__((always_inline))
namespace qf::kernels::ggml_dot {

// fp16 bits -> float where the target has no F16C: core/dtype's conversion.
inline float Half(const uint8_t* p) { return F16ToF32(uint16_t(p[0] | p[1] << 8)); }
inline uint32_t U32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// ggml type ids of ggml.h.
enum TypeId : int {
  kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8, kQ2_K = 10, kQ3_K = 11, kQ4_K = 12,
  kQ5_K = 13, kQ6_K = 14, kIQ4_NL = 20, kIQ4_XS = 23
};

// GgmlInterleave's units of a block in the order they are stored, which is the order the
// interleaved GEMV reads them: (byte offset in the block as in a file, size). One case per
// interleaved type; empty for the others.
struct Unit {
  size_t from, size;
};
inline std::vector<Unit> InterleaveUnits(int id) {
  std::vector<Unit> u;
  const auto run = [&](size_t from, size_t to, size_t size) {
    for (size_t o = from; o < to; o += size) u.push_back({o, size});
  };
  switch (id) {
    case kQ4_0: run(0, 18, 2); break;  // d; codes in pairs (weights 2c, 2c+1 | 16 + 2c, 17 + 2c)
    case kQ8_0: run(0, 34, 2); break;  // d; codes in pairs
    case kQ4_K:                        // d, dmin; the 12 scale bytes; codes in pairs
      run(0, 4, 2);
      run(4, 16, 1);
      run(16, 144, 2);
      break;
    case kQ6_K:  // d; the 16 scales; per quarter 2n + h and c < 8: ql[l], ql[l + 32], qh[l - 32n]
      run(208, 210, 2);  //   in pairs, l = 64n + 16h + 2c
      run(192, 208, 1);
      for (size_t n = 0; n < 2; ++n)
        for (size_t h = 0; h < 2; ++h)
          for (size_t c = 0; c < 8; ++c) {
            const size_t l = 64 * n + 16 * h + 2 * c;
            u.push_back({l, 2});
            u.push_back({l + 32, 2});
            u.push_back({128 + l - 32 * n, 2});
          }
      break;
    default: break;
  }
  return u;
}

}  // namespace qf::kernels::ggml_dot
#endif  // QF_GGML_DOT_ONCE

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// fp16 -> float: F16C where the target has it (AVX2 and up), else core/dtype's F16ToF32. Equal
// for every input but signalling NaNs, which F16C quiets.
HWY_INLINE float Half(const uint8_t* p) {
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
#else
  return ggml_dot::Half(p);
#endif
}

using DF = hn::CappedTag<float, 16>;
using DI = hn::Rebind<int16_t, DF>;   // a block's codes: N int16 lanes
using DU = hn::RebindToUnsigned<DI>;
using D32 = hn::Rebind<int32_t, DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// N bytes from p, each widened to an int16 lane.
HWY_INLINE VI Bytes(const uint8_t* p) {
  const hn::Rebind<uint8_t, DI> d8;
  return hn::PromoteTo(DI(), hn::LoadU(d8, p));
}
HWY_INLINE VI SignedBytes(const uint8_t* p) {
  const hn::Rebind<int8_t, DI> d8;
  return hn::PromoteTo(DI(), hn::LoadU(d8, reinterpret_cast<const int8_t*>(p)));
}
HWY_INLINE VF F(VI v) { return hn::ConvertTo(DF(), hn::PromoteTo(D32(), v)); }
HWY_INLINE VI I(int v) { return hn::Set(DI(), int16_t(v)); }
HWY_INLINE VF S(float v) { return hn::Set(DF(), v); }

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

// out[j] = d * float(v[j]) for j < kN (v: kN bytes, signed or not as V says): a super-block's
// sub-block scales, rounded as the reference decoders round them.
template <size_t kN, typename V>
HWY_INLINE void Scales(float d, const V* v, float* out) {
  const hn::CappedTag<float, kN> df;
  const hn::Rebind<int32_t, decltype(df)> di;
  const hn::Rebind<V, decltype(df)> dv;
  HWY_UNROLL(4)
  for (size_t j = 0; j < kN; j += hn::Lanes(df)) {
    const auto q = hn::ConvertTo(df, hn::PromoteTo(di, hn::LoadU(dv, v + j)));
    hn::StoreU(hn::Mul(hn::Set(df, d), q), df, out + j);
  }
}

// i1 of an emit that carries one vector.
constexpr size_t kNone = ~size_t(0);

// ---- one decoder per type ----------------------------------------------------------------------
// Run(block, emit) calls emit(i0, q0, i1, q1, a, c): integer levels q0 of weights i0 .. i0+N-1
// and q1 of weights i1 .. i1+N-1 of the block (i1 = kNone: q0 alone), both decoding to a * q - c
// (kMin types; a * q for the others). a and c are the reference decoder's own float factors, so
// a * q [- c] in float is its output bit for bit.

struct BQ4_0 {  // d; x = (q - 8) * d
  static constexpr size_t kW = 32, kB = 18;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const float d = Half(b);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b + 2 + j);
      e.Emit(j, hn::Sub(hn::And(q, I(15)), I(8)), j + 16, hn::Sub(hn::ShiftRight<4>(q), I(8)), d,
             0.f, 0);
    }
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BQ4_1 {  // d, m; x = q * d + m
  static constexpr size_t kW = 32, kB = 20;
  static constexpr bool kMin = true;
  static constexpr bool kSuper = false;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const float d = Half(b), m = Half(b + 2);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b + 4 + j);
      e.Emit(j, hn::And(q, I(15)), j + 16, hn::ShiftRight<4>(q), d, -m, 0);
    }
    const float c = -m;
    e.End(0.f, &c, 1, 32);
  }
};

// The fifth bits of weights j .. j + N - 1 of a Q5 block (bit j of qh), as 16 or 0.
alignas(64) constexpr uint16_t kBit[16] = {1,     2,     4,     8,     16,    32,    64,    128,
                                           256,   512,   1024,  2048,  4096,  8192,  16384, 32768};
HWY_INLINE VI FifthBits(uint32_t qh, size_t j) {
  const DU du;
  const uint16_t half = uint16_t(j < 16 ? qh : qh >> 16);
  const auto set = hn::And(hn::Set(du, half), hn::LoadU(du, kBit + j % 16));
  return hn::BitCast(DI(), hn::IfThenElseZero(hn::Ne(set, hn::Zero(du)), hn::Set(du, uint16_t(16))));
}

struct BQ5_0 {  // d, qh; x = (q - 16) * d
  static constexpr size_t kW = 32, kB = 22;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const float d = Half(b);
    const uint32_t qh = ggml_dot::U32(b + 2);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b + 6 + j);
      const VI lo = hn::Or(hn::And(q, I(15)), FifthBits(qh, j));
      const VI hi = hn::Or(hn::ShiftRight<4>(q), FifthBits(qh, j + 16));
      e.Emit(j, hn::Sub(lo, I(16)), j + 16, hn::Sub(hi, I(16)), d, 0.f, 0);
    }
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BQ5_1 {  // d, m, qh; x = q * d + m
  static constexpr size_t kW = 32, kB = 24;
  static constexpr bool kMin = true;
  static constexpr bool kSuper = false;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const float d = Half(b), m = Half(b + 2);
    const uint32_t qh = ggml_dot::U32(b + 4);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N) {
      const VI q = Bytes(b + 8 + j);
      e.Emit(j, hn::Or(hn::And(q, I(15)), FifthBits(qh, j)), j + 16,
             hn::Or(hn::ShiftRight<4>(q), FifthBits(qh, j + 16)), d, -m, 0);
    }
    const float c = -m;
    e.End(0.f, &c, 1, 32);
  }
};

struct BQ8_0 {  // d; x = q * d, q int8
  static constexpr size_t kW = 32, kB = 34;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const float d = Half(b);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N)
      e.Emit(j, SignedBytes(b + 2 + j), j + 16, SignedBytes(b + 18 + j), d, 0.f, 0);
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BIQ4_NL {  // d; x = d * grid[q]
  static constexpr size_t kW = 32, kB = 18;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = false;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const float d = Half(b);
    HWY_UNROLL(4)
    for (size_t j = 0; j < 16; j += N)
      e.Emit(j, Iq4Values(b + 2 + j, false), j + 16, Iq4Values(b + 2 + j, true), d, 0.f, 0);
    e.End(0.f, nullptr, 0, 0);
  }
};

struct BIQ4_XS {  // d, 6-bit sub-block scales; x = d * (ls - 32) * grid[q]
  static constexpr size_t kW = 256, kB = 136;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = true;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    const uint32_t scales_h = uint32_t(b[2]) | uint32_t(b[3]) << 8;
    int8_t ls[8];
    HWY_UNROLL(8)
    for (size_t ib = 0; ib < 8; ++ib) {
      ls[ib] = int8_t((((b[4 + ib / 2] >> 4 * (ib % 2)) & 0xf) | (((scales_h >> 2 * ib) & 3) << 4)) -
                      32);
    }
    float dl[8];
    const float d = Half(b);
    Scales<8>(d, ls, dl);
    const uint8_t* qs = b + 8;
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

// Q2_K, Q3_K, Q6_K have sub-blocks of 16: an emit pairs weights l and l + 16 of one sub-block
// at a time for N < 16; for N = 16 the two halves of a vector pair are two sub-blocks, so those
// emit one vector at a time (the second of the pair all zero codes).
struct BQ2_K {  // scales (4-bit scale | min << 4) x16, qs[64], d, dmin; x = d*sc * q - dmin*m
  static constexpr size_t kW = 256, kB = 84;
  static constexpr bool kMin = true;
  static constexpr bool kSuper = true;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    uint8_t sc[16], mn[16];
    HWY_UNROLL(16)
    for (int j = 0; j < 16; ++j) {
      sc[j] = b[j] & 0xF;
      mn[j] = b[j] >> 4;
    }
    float dl[16], ml[16];
    const float d = Half(b + 80);
    Scales<16>(d, sc, dl);
    Scales<16>(Half(b + 82), mn, ml);
    const uint8_t* q = b + 16;
    HWY_UNROLL(2)
    for (int n = 0; n < 2; ++n, q += 32) {
      HWY_UNROLL(4)
      for (int shift = 0; shift < 8; shift += 2) {
        const int is = 8 * n + shift;
        const size_t o = size_t(16 * is);
        HWY_UNROLL(4)
        for (size_t l = 0; l < 16; l += N) {
          e.Emit(o + l, hn::And(hn::ShiftRightSame(Bytes(q + l), shift), I(3)), kNone,
                 hn::Zero(DI()), dl[is], ml[is], sc[is]);
          e.Emit(o + 16 + l, hn::And(hn::ShiftRightSame(Bytes(q + 16 + l), shift), I(3)), kNone,
                 hn::Zero(DI()), dl[is + 1], ml[is + 1], sc[is + 1]);
        }
      }
    }
    e.End(d, ml, 16, 16);
  }
};

struct BQ3_K {  // hmask[32], qs[64], 6-bit signed scales, d; x = d*sc * (q - (high bit ? 0 : 4))
  static constexpr size_t kW = 256, kB = 110;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = true;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    int8_t sc[16];
    HWY_UNROLL(16)
    for (int j = 0; j < 16; ++j) sc[j] = int8_t(ggml::ScaleQ3(j, b + 96));
    float dl[16];
    const float d = Half(b + 108);
    Scales<16>(d, sc, dl);
    const uint8_t* q = b + 32;
    HWY_UNROLL(2)
    for (int n = 0; n < 2; ++n, q += 32) {
      HWY_UNROLL(4)
      for (int shift = 0; shift < 8; shift += 2) {
        const int is = 8 * n + shift, hb = 4 * n + shift / 2;
        const size_t o = size_t(16 * is);
        HWY_UNROLL(4)
        for (size_t l = 0; l < 16; l += N) {
          const VI lo0 = hn::And(hn::ShiftRightSame(Bytes(q + l), shift), I(3));
          const VI lo1 = hn::And(hn::ShiftRightSame(Bytes(q + 16 + l), shift), I(3));
          const VI h0 = hn::And(hn::ShiftRightSame(Bytes(b + l), hb), I(1));
          const VI h1 = hn::And(hn::ShiftRightSame(Bytes(b + 16 + l), hb), I(1));
          e.Emit(o + l, hn::Sub(hn::Or(lo0, hn::ShiftLeft<2>(h0)), I(4)), kNone, hn::Zero(DI()),
                 dl[is], 0.f, sc[is]);
          e.Emit(o + 16 + l, hn::Sub(hn::Or(lo1, hn::ShiftLeft<2>(h1)), I(4)), kNone,
                 hn::Zero(DI()), dl[is + 1], 0.f, sc[is + 1]);
        }
      }
    }
    e.End(d, nullptr, 0, 0);
  }
};

// Q4_K / Q5_K: the 8 sub-block scales and mins, and times d and dmin; returns d.
HWY_INLINE float ScalesK4(const uint8_t* b, uint8_t* sc, float* dl, float* ml) {
  uint8_t mn[8];
  ggml::GetScalesMinsK4(b + 4, sc, mn);
  const float d = Half(b);
  Scales<8>(d, sc, dl);
  Scales<8>(Half(b + 2), mn, ml);
  return d;
}

// Q4_K: d, dmin, 6-bit scales and mins x8, qs[128]; x = d*sc * q - dmin*m. Q5_K (kFive): the
// same with a fifth bit per weight in qh[32] (bit 2c or 2c + 1 of qh[l] for chunk c's low and
// high nibbles), the nibbles after it.
template <bool kFive>
struct BQK45 {
  static constexpr size_t kW = 256, kB = kFive ? 176 : 144;
  static constexpr bool kMin = true;
  static constexpr bool kSuper = true;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    float dl[8], ml[8];
    uint8_t sc[8];
    const float d = ScalesK4(b, sc, dl, ml);
    const uint8_t* qh = b + 16;
    const uint8_t* ql = b + (kFive ? 48 : 16);
    // Bit k of h, moved to bit 4 (zero for Q4_K).
    const auto fifth = [&](VI h, int k) HWY_ATTR QF_ALWAYS_INLINE {
      return kFive ? hn::ShiftLeft<4>(hn::And(hn::ShiftRightSame(h, k), I(1))) : hn::Zero(DI());
    };
    HWY_UNROLL(4)
    for (int is = 0; is < 8; is += 2, ql += 32) {
      const size_t o = size_t(32 * is);
      HWY_UNROLL(4)
      for (size_t l = 0; l < 16; l += N) {
        const VI v0 = Bytes(ql + l), v1 = Bytes(ql + 16 + l);
        const VI h0 = kFive ? Bytes(qh + l) : hn::Zero(DI());
        const VI h1 = kFive ? Bytes(qh + 16 + l) : hn::Zero(DI());
        e.Emit(o + l, hn::Or(hn::And(v0, I(15)), fifth(h0, is)), o + 16 + l,
               hn::Or(hn::And(v1, I(15)), fifth(h1, is)), dl[is], ml[is], sc[is]);
        e.Emit(o + 32 + l, hn::Or(hn::ShiftRight<4>(v0), fifth(h0, is + 1)), o + 48 + l,
               hn::Or(hn::ShiftRight<4>(v1), fifth(h1, is + 1)), dl[is + 1], ml[is + 1],
               sc[is + 1]);
      }
    }
    e.End(d, ml, 8, 32);
  }
};
using BQ4_K = BQK45<false>;
using BQ5_K = BQK45<true>;

struct BQ6_K {  // ql[128], qh[64], int8 scales x16, d; x = d*sc * (q - 32)
  static constexpr size_t kW = 256, kB = 210;
  static constexpr bool kMin = false;
  static constexpr bool kSuper = true;
  template <class E>
  static HWY_INLINE void Run(const uint8_t* b, E& e) {
    const size_t N = hn::Lanes(DF());
    float dl[16];
    const float d = Half(b + 208);
    const int8_t* isc = reinterpret_cast<const int8_t*>(b + 192);
    Scales<16>(d, isc, dl);
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    HWY_UNROLL(2)
    for (size_t n = 0; n < 256; n += 128, ql += 64, qh += 32) {
      const float* sc = dl + n / 16;
      const int8_t* si = isc + n / 16;
      HWY_UNROLL(8)
      for (size_t l = 0; l < 32; l += N) {
        const size_t is = l / 16;
        const VI a = Bytes(ql + l), c = Bytes(ql + 32 + l), h = Bytes(qh + l);
        const VI q1 = hn::Sub(hn::Or(hn::And(a, I(15)), hn::ShiftLeft<4>(hn::And(h, I(3)))), I(32));
        const VI q2 = hn::Sub(
            hn::Or(hn::And(c, I(15)), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(h), I(3)))), I(32));
        const VI q3 = hn::Sub(
            hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(h), I(3)))),
            I(32));
        const VI q4 = hn::Sub(hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(h))),
                              I(32));
        const VI z = hn::Zero(DI());
        e.Emit(n + l, q1, kNone, z, sc[is], 0.f, si[is]);
        e.Emit(n + 32 + l, q2, kNone, z, sc[is + 2], 0.f, si[is + 2]);
        e.Emit(n + 64 + l, q3, kNone, z, sc[is + 4], 0.f, si[is + 4]);
        e.Emit(n + 96 + l, q4, kNone, z, sc[is + 6], 0.f, si[is + 6]);
      }
    }
    e.End(d, nullptr, 0, 0);
  }
};

// ---- drivers -----------------------------------------------------------------------------------

template <class B>
HWY_INLINE VF Value(VI q, float a, float c) {
  const VF v = hn::Mul(S(a), F(q));
  return B::kMin ? hn::Sub(v, S(c)) : v;
}

template <class B>
struct DecodeEmitter {
  float* o;
  HWY_INLINE void Emit(size_t i0, VI q0, size_t i1, VI q1, float a, float c, int) const {
    hn::StoreU(Value<B>(q0, a, c), DF(), o + i0);
    if (i1 != kNone) hn::StoreU(Value<B>(q1, a, c), DF(), o + i1);
  }
  HWY_INLINE void End(float, const float*, int, int) const {}
};

template <class B>
void DecodeRowsT(const GgmlRows& w, float* out) {
  const int64_t nb = w.cols / int64_t(B::kW);
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(w.data) + size_t(r) * w.row_bytes;
    DecodeEmitter<B> e{out + r * w.cols};
    for (int64_t blk = 0; blk < nb; ++blk, p += B::kB, e.o += B::kW) B::Run(p, e);
  }
}

// The float GEMV: levels decoded to floats (as GgmlDecodeRows) and multiplied into x with FMAs,
// M tokens at a time, two accumulators per token alternating between successive vectors.
template <class B, int M>
struct FloatEmitter {
  const float* x;  // token 0's activations at this block
  int64_t K;
  VF acc[2][M];
  HWY_INLINE void Zero() {
    for (auto& a : acc)
      for (auto& v : a) v = hn::Zero(DF());
  }
  HWY_INLINE void Emit(size_t i0, VI q0, size_t i1, VI q1, float a, float c, int) {
    const DF df;
    const size_t k = (i0 / hn::Lanes(df)) & 1;
    const VF v0 = Value<B>(q0, a, c);
    for (int t = 0; t < M; ++t) acc[k][t] = hn::MulAdd(v0, hn::LoadU(df, x + t * K + i0), acc[k][t]);
    if (i1 != kNone) {
      const VF v1 = Value<B>(q1, a, c);
      for (int t = 0; t < M; ++t)
        acc[k ^ 1][t] = hn::MulAdd(v1, hn::LoadU(df, x + t * K + i1), acc[k ^ 1][t]);
    }
  }
  HWY_INLINE void End(float, const float*, int, int) {}
};

template <class B, int M>
void GemvFloat(const GgmlRows& w, const float* x, float* y, int64_t ldy) {
  const DF df;
  const int64_t nb = w.cols / int64_t(B::kW);
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(w.data) + size_t(r) * w.row_bytes;
    FloatEmitter<B, M> e0{x, w.cols, {}}, e1{x + B::kW, w.cols, {}};
    e0.Zero();
    e1.Zero();
    int64_t blk = 0;
    for (; blk + 2 <= nb; blk += 2, p += 2 * B::kB, e0.x += 2 * B::kW, e1.x += 2 * B::kW) {
      B::Run(p, e0);
      B::Run(p + B::kB, e1);
    }
    if (blk < nb) B::Run(p, e0);
    for (int t = 0; t < M; ++t) {
      const VF s = hn::Add(hn::Add(e0.acc[0][t], e0.acc[1][t]), hn::Add(e1.acc[0][t], e1.acc[1][t]));
      y[t * ldy + r] = hn::GetLane(hn::SumOfLanes(df, s));
    }
  }
}

#if HWY_TARGET != HWY_SCALAR
// Largest |xq| of the 16-bit activations: 512 N - 1 keeps every int32 lane of a super-block's
// sums below 2^30 (|level * sub-block scale| <= 4096, 512 / N products per lane per block).
constexpr int kXMaxPerLane = 512;
HWY_INLINE int XMax() { return kXMaxPerLane * int(hn::Lanes(DF())) - 1; }

// The integer GEMV: levels times xq summed pairwise into int32 lanes (vpmaddwd). Types with
// integer sub-block scales (kSuper) multiply the levels by them (int16) and sum the whole
// super-block in int32, scaled by d once at End; the others scale each emit's sums by a in
// float. Mins (c) come at End as Σ c_j · Σx over each sub-block, from float sums of x.
template <class B, int M>
struct IntEmitter {
  using DW = hn::Repartition<int32_t, DI>;
  using DFW = hn::Repartition<float, DI>;
  const int16_t* xq;   // token 0's fixed-point activations at this block
  const float* xs16;   // token 0's sums of x over 16 weights, at this block
  const float* xs32;   // ... over 32
  int64_t K;
  hn::Vec<DFW> acc[M];
  hn::Vec<DW> iacc[2][M], iodd[2][M];
  float mins[M];

  HWY_INLINE void Zero() {
    for (int t = 0; t < M; ++t) {
      acc[t] = hn::Zero(DFW());
      iacc[0][t] = iacc[1][t] = iodd[0][t] = iodd[1][t] = hn::Zero(DW());
      mins[t] = 0.f;
    }
  }
  HWY_INLINE void Advance(int64_t blocks) {
    xq += blocks * int64_t(B::kW);
    xs16 += blocks * int64_t(B::kW / 16);
    xs32 += blocks * int64_t(B::kW / 32);
  }

  HWY_INLINE void Emit(size_t i0, VI q0, size_t i1, VI q1, float a, float, int sc) {
    const DI di;
    const DW dw;
    const DFW dfw;
    const size_t k = (i0 / hn::Lanes(DF())) & 1;
    if (B::kSuper) {
      const VI s = hn::Set(di, int16_t(sc));
      q0 = hn::Mul(q0, s);
      if (i1 != kNone) q1 = hn::Mul(q1, s);
      for (int t = 0; t < M; ++t) {
        iacc[k][t] = hn::ReorderWidenMulAccumulate(dw, q0, hn::LoadU(di, xq + t * K + i0),
                                                   iacc[k][t], iodd[k][t]);
        if (i1 != kNone)
          iacc[k][t] = hn::ReorderWidenMulAccumulate(dw, q1, hn::LoadU(di, xq + t * K + i1),
                                                     iacc[k][t], iodd[k][t]);
      }
    } else {
      for (int t = 0; t < M; ++t) {
        auto odd = hn::Zero(dw);
        auto sum = hn::ReorderWidenMulAccumulate(dw, q0, hn::LoadU(di, xq + t * K + i0),
                                                 hn::Zero(dw), odd);
        if (i1 != kNone)
          sum = hn::ReorderWidenMulAccumulate(dw, q1, hn::LoadU(di, xq + t * K + i1), sum, odd);
        sum = hn::RearrangeToOddPlusEven(sum, odd);
        acc[t] = hn::MulAdd(hn::ConvertTo(dfw, sum), hn::Set(dfw, a), acc[t]);
      }
    }
  }
  HWY_INLINE void End(float d, const float* c, int n, int span) {
    const DW dw;
    const DFW dfw;
    if (B::kSuper) {
      for (int t = 0; t < M; ++t) {
        const auto sum = hn::Add(hn::RearrangeToOddPlusEven(iacc[0][t], iodd[0][t]),
                                 hn::RearrangeToOddPlusEven(iacc[1][t], iodd[1][t]));
        acc[t] = hn::MulAdd(hn::ConvertTo(dfw, sum), hn::Set(dfw, d), acc[t]);
        iacc[0][t] = iacc[1][t] = iodd[0][t] = iodd[1][t] = hn::Zero(dw);
      }
    }
    if (B::kMin) {
      const float* xs = span == 16 ? xs16 : xs32;
      const int64_t stride = K / span;
      for (int t = 0; t < M; ++t) {
        float m = 0.f;
        for (int j = 0; j < n; ++j) m += c[j] * xs[t * stride + j];
        mins[t] += m;
      }
    }
  }
};

// Even and odd blocks go to two emitters (independent accumulator chains).
template <class B, int M>
void GemvInt(const GgmlRows& w, const int16_t* xq, const float* dx, const float* xs16,
             const float* xs32, float* y, int64_t ldy) {
  using E = IntEmitter<B, M>;
  const typename E::DFW dfw;
  const int64_t K = w.cols, nb = K / int64_t(B::kW);
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(w.data) + size_t(r) * w.row_bytes;
    E e0{xq, xs16, xs32, K, {}, {}, {}, {}}, e1 = e0;
    e0.Zero();
    e1.Zero();
    e1.Advance(1);
    int64_t blk = 0;
    for (; blk + 2 <= nb; blk += 2, p += 2 * B::kB) {
      B::Run(p, e0);
      B::Run(p + B::kB, e1);
      e0.Advance(2);
      e1.Advance(2);
    }
    if (blk < nb) B::Run(p, e0);
    for (int t = 0; t < M; ++t) {
      const float dot = hn::GetLane(hn::SumOfLanes(dfw, hn::Add(e0.acc[t], e1.acc[t])));
      y[t * ldy + r] = dx[t] * dot - (e0.mins[t] + e1.mins[t]);
    }
  }
}

// x[m, K] -> xq (fixed point per token, |xq| <= XMax()), dx, and the sums of x over every 16
// and 32 weights; false when some x is not finite (the float GEMV takes those).
bool QuantizeActivations(const float* x, int64_t m, int64_t K, int16_t* xq, float* dx,
                         float* xs16, float* xs32) {
  const DF df;
  const size_t N = hn::Lanes(df);
  const int64_t G = K / int64_t(N);
  const float xmax = float(XMax());
  for (int64_t t = 0; t < m; ++t) {
    const float* xt = x + t * K;
    // probe = Σ x * 0: NaN when some x is inf or NaN (Max drops NaNs on x86).
    auto vmax = hn::Zero(df), probe = hn::Zero(df);
    for (int64_t g = 0; g < G; ++g) {
      const VF v = hn::LoadU(df, xt + g * int64_t(N));
      vmax = hn::Max(vmax, hn::Abs(v));
      probe = hn::MulAdd(v, hn::Zero(df), probe);
    }
    if (!(hn::GetLane(hn::SumOfLanes(df, probe)) == 0.f)) return false;
    for (int64_t j = 0; j < K / 16; ++j) {
      float s = 0.f;
      for (int k = 0; k < 16; ++k) s += xt[16 * j + k];
      xs16[t * (K / 16) + j] = s;
    }
    for (int64_t j = 0; j < K / 32; ++j)
      xs32[t * (K / 32) + j] = xs16[t * (K / 16) + 2 * j] + xs16[t * (K / 16) + 2 * j + 1];
    const float amax = hn::GetLane(hn::MaxOfLanes(df, vmax));
    dx[t] = amax / xmax;
    const float inv = amax > 0 ? xmax / amax : 0.f;
    if (!(inv <= std::numeric_limits<float>::max())) return false;  // subnormal activations
    // |x * inv| <= xmax up to the rounding of inv; the clamp makes it exact.
    const VF vinv = S(inv), lo = S(-xmax), hi = S(xmax);
    for (int64_t g = 0; g < G; ++g) {
      const VF v = hn::Min(hn::Max(hn::Mul(hn::LoadU(df, xt + g * int64_t(N)), vinv), lo), hi);
      hn::StoreU(hn::DemoteTo(DI(), hn::NearestInt(v)), DI(), xq + t * K + g * int64_t(N));
    }
  }
  return true;
}
#endif

#if HWY_TARGET != HWY_SCALAR
// M tokens' activations for the integer GEMVs, in per-thread buffers: fixed point (xq, dx), float
// sums over each 16 and 32 weights (the plain kernels' mins) and, with int_sums, integer sums of
// xq over each 16 and 32 (the interleaved kernels). Prepare is false when some x is not finite.
template <int M>
struct TokenActs {
  int16_t* xq = nullptr;
  float dx[M];
  float *xs16 = nullptr, *xs32 = nullptr;
  int32_t *s16 = nullptr, *s32 = nullptr;

  bool Prepare(const float* x, int64_t K, bool int_sums) {
    thread_local std::vector<int16_t> q;
    thread_local std::vector<float> fs;
    thread_local std::vector<int32_t> is;
    q.resize(size_t(M * K));
    fs.resize(size_t(M * (K / 16 + K / 32)));
    xq = q.data();
    xs16 = fs.data();
    xs32 = fs.data() + M * (K / 16);
    if (!QuantizeActivations(x, M, K, xq, dx, xs16, xs32)) return false;
    if (int_sums) {
      is.resize(size_t(M * (K / 16 + K / 32)));
      s16 = is.data();
      s32 = is.data() + M * (K / 16);
      for (int64_t j = 0; j < M * (K / 16); ++j) {
        int32_t s = 0;
        for (int k = 0; k < 16; ++k) s += xq[16 * j + k];
        s16[j] = s;
        if (j % 2 == 1) s32[j / 2] = s16[j - 1] + s;
      }
    }
    return true;
  }
};
#endif

// fn(t, M) for the m tokens in runs of M = 4, then 2, then 1 (M a std::integral_constant), t the
// run's first token.
template <class Fn>
HWY_INLINE void ByTokenRuns(int64_t m, Fn&& fn) {
  int64_t t = 0;
  for (; t + 4 <= m; t += 4) fn(t, std::integral_constant<int, 4>());
  if (m - t >= 2) {
    fn(t, std::integral_constant<int, 2>());
    t += 2;
  }
  if (t < m) fn(t, std::integral_constant<int, 1>());
}

template <class B, int M>
void GemvM(const GgmlRows& w, const float* x, float* y, int64_t ldy) {
#if HWY_TARGET != HWY_SCALAR
  TokenActs<M> a;
  if (a.Prepare(x, w.cols, false)) {
    GemvInt<B, M>(w, a.xq, a.dx, a.xs16, a.xs32, y, ldy);
    return;
  }
#endif
  GemvFloat<B, M>(w, x, y, ldy);
}

template <class B>
void GemvTokens(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  ByTokenRuns(m, [&](int64_t t, auto M) HWY_ATTR {
    GemvM<B, decltype(M)::value>(w, x + t * w.cols, y + t * ldy, ldy);
  });
}

// ---- interleaved rows (GgmlInterleave): one int32 lane per row -------------------------------
// Each 16-row group goes through the plain kernels after restoring it in a per-thread buffer
// (prefill tiles, non-finite activations, the scalar target); the integer GEMV below reads it as
// laid out.
template <class Fn>
void ForEachRestoredGroup(const GgmlRows& w, Fn&& fn) {
  constexpr int64_t R = kGgmlInterleaveRows;
  QF_CHECK(w.rows % R == 0, "interleaved rows ({}) must be a multiple of {}", w.rows, R);
  thread_local std::vector<std::byte> buf;
  buf.resize(size_t(R) * w.row_bytes);
  for (int64_t r0 = 0; r0 < w.rows; r0 += R) {
    GgmlDeinterleave(*w.type, w.data + size_t(r0) * w.row_bytes, R, w.cols, buf.data());
    fn(GgmlRows{w.type, buf.data(), w.row_bytes, R, w.cols, false}, r0);
  }
}

#if HWY_TARGET != HWY_SCALAR
// kL rows per vector of int32 (or float) lanes; kG vectors per group of 16.
using DR = hn::ScalableTag<int32_t>;
using DR16 = hn::Repartition<int16_t, DR>;
using DRF = hn::Repartition<float, DR>;
using VR = hn::Vec<DR>;
using VR16 = hn::Vec<DR16>;
using VRF = hn::Vec<DRF>;
constexpr size_t kL = hn::MaxLanes(DR());
constexpr size_t kG = size_t(kGgmlInterleaveRows) / kL;
static_assert(kL >= 4 && kL <= size_t(kGgmlInterleaveRows) && kGgmlInterleaveRows % kL == 0,
              "a group of 16 rows must be a whole number of int32 vectors");

// kL rows' 2-byte units of codes at p, widened to int16 lanes (row-major pairs).
HWY_INLINE VR16 RowPairs(const uint8_t* p) {
  return hn::PromoteTo(DR16(), hn::LoadU(hn::Rebind<uint8_t, DR16>(), p));
}
// The activation pair xq[0], xq[1] in every int32 lane, as int16 lanes.
HWY_INLINE VR16 PairOf(const int16_t* xq) {
  int32_t v;
  std::memcpy(&v, xq, 4);
  return hn::BitCast(DR16(), hn::Set(DR(), v));
}
// kL rows' fp16 at p.
HWY_INLINE VRF RowHalves(const uint8_t* p) {
  const hn::Rebind<hwy::float16_t, DRF> dh;
  return hn::PromoteTo(DRF(), hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
}
// kL rows' bytes at p.
HWY_INLINE VR RowBytes(const uint8_t* p) {
  return hn::PromoteTo(DR(), hn::LoadU(hn::Rebind<uint8_t, DR>(), p));
}
// Token 0's fixed-point activations at a block (tokens K apart) and their sums over each 16 and
// 32 (tokens K / 16 and K / 32 apart).
struct IActs {
  const int16_t* q;
  const int32_t* s16;
  const int32_t* s32;
  int64_t K;
  // Activations k, k + 1 of token t in every int32 lane.
  HWY_INLINE VR16 Pair(int t, size_t k) const { return PairOf(q + t * K + k); }
  HWY_INLINE int32_t Sum16(int t, size_t j) const { return s16[t * (K / 16) + int64_t(j)]; }
  HWY_INLINE int32_t Sum32(int t, size_t j) const { return s32[t * (K / 32) + int64_t(j)]; }
  HWY_INLINE void Advance(size_t weights) {
    q += weights;
    s16 += weights / 16;
    s32 += weights / 32;
  }
};

// s += v * x, summed pairwise into int32 lanes (vpmaddwd); odd: the other half where a target
// keeps one (x86 does not).
HWY_INLINE void MulPairs(VR16 v, VR16 x, VR& s, VR& odd) {
  s = hn::ReorderWidenMulAccumulate(DR(), v, x, s, odd);
}
HWY_INLINE VR Total(VR s, VR odd) { return hn::RearrangeToOddPlusEven(s, odd); }

template <size_t kA, int M>
HWY_INLINE void ZeroAll(VR (&v)[kA][kG][M]) {
  for (auto& a : v)
    for (auto& g : a)
      for (auto& x : g) x = hn::Zero(DR());
}

// The interleaved kernels, named <type>x16 (16 rows side by side; not ggml's i-quants).
// Block(p, x, acc): a block column of 16 interleaved rows at p; acc[g][t] += Σ_k w[row][k]
// x[t][k] in float with the block's scales applied (lane = row, before the token's dx).
struct Q4_0x16 {  // [d x16][unit c: codes 2c, 2c+1 (weights 2c, 2c+1 | +16) x16] c < 8
  static constexpr size_t kW = 32, kB = 18;
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    VR s[2][kG][M];  // sums and odd halves
    ZeroAll(s);
    HWY_UNROLL(8)
    for (size_t c = 0; c < 8; ++c) {
      VR16 xl[M], xh[M];
      for (int t = 0; t < M; ++t) {
        xl[t] = x.Pair(t, 2 * c);
        xh[t] = x.Pair(t, 16 + 2 * c);
      }
      for (size_t g = 0; g < kG; ++g) {
        const VR16 v = RowPairs(p + 32 + 32 * c + 2 * kL * g);
        const VR16 lo = hn::And(v, hn::Set(DR16(), 15)), hi = hn::ShiftRight<4>(v);
        for (int t = 0; t < M; ++t) {
          MulPairs(lo, xl[t], s[0][g][t], s[1][g][t]);
          MulPairs(hi, xh[t], s[0][g][t], s[1][g][t]);
        }
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      for (int t = 0; t < M; ++t) {
        // Σ (q - 8) xq = Σ q xq - 8 Σ xq, exact in int32.
        const VR sum = hn::Sub(Total(s[0][g][t], s[1][g][t]), hn::Set(DR(), 8 * x.Sum32(t, 0)));
        acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), sum), d, acc[g][t]);
      }
    }
  }
};

struct Q8_0x16 {  // [d x16][unit c: codes 2c, 2c+1 x16] c < 16
  static constexpr size_t kW = 32, kB = 34;
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

// [d x16][dmin x16][scale byte i x16, i < 12][unit u: codes 2u, 2u+1 x16, u < 64]; unit 16 j + c
// holds weights 2c, 2c+1 of sub-blocks 2j (low nibbles) and 2j + 1 (high). Integer sums per
// super-block: A = Σ_sub sc Σ q xq (|A| <= 63 * 15 * 8191 * 256 < 2^31) and B = Σ_sub m Σ xq;
// then acc += d A - dmin B.
struct Q4_Kx16 {
  static constexpr size_t kW = 256, kB = 144;
  // Scale and min of sub-block j for rows kL g ..: ggml's get_scale_min_k4 on kL rows at once.
  static HWY_INLINE void ScaleMin(const uint8_t* S, size_t j, size_t g, VR& sc, VR& m) {
    const auto b = [&](size_t i) HWY_ATTR { return RowBytes(S + 16 * i + kL * g); };
    const VR k63 = hn::Set(DR(), 63), k15 = hn::Set(DR(), 15);
    if (j < 4) {
      sc = hn::And(b(j), k63);
      m = hn::And(b(j + 4), k63);
    } else {
      const VR q = b(j + 4);
      sc = hn::Or(hn::And(q, k15), hn::ShiftLeft<4>(hn::ShiftRight<6>(b(j - 4))));
      m = hn::Or(hn::ShiftRight<4>(q), hn::ShiftLeft<4>(hn::ShiftRight<6>(b(j))));
    }
  }
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    const uint8_t* S = p + 64;
    const uint8_t* q = p + 256;
    VR A[kG][M], Bm[kG][M];
    for (size_t g = 0; g < kG; ++g)
      for (int t = 0; t < M; ++t) A[g][t] = Bm[g][t] = hn::Zero(DR());
    HWY_UNROLL(1)
    for (size_t j = 0; j < 4; ++j, q += 32 * 16) {
      VR s[4][kG][M];  // low nibbles' sums and odd halves, then the high nibbles'
      ZeroAll(s);
      HWY_UNROLL(4)
      for (size_t c = 0; c < 16; ++c) {
        VR16 xl[M], xh[M];
        for (int t = 0; t < M; ++t) {
          xl[t] = x.Pair(t, 64 * j + 2 * c);
          xh[t] = x.Pair(t, 64 * j + 32 + 2 * c);
        }
        for (size_t g = 0; g < kG; ++g) {
          const VR16 v = RowPairs(q + 32 * c + 2 * kL * g);
          const VR16 lo = hn::And(v, hn::Set(DR16(), 15)), hi = hn::ShiftRight<4>(v);
          for (int t = 0; t < M; ++t) {
            MulPairs(lo, xl[t], s[0][g][t], s[1][g][t]);
            MulPairs(hi, xh[t], s[2][g][t], s[3][g][t]);
          }
        }
      }
      for (size_t g = 0; g < kG; ++g) {
        VR scl, ml, sch, mh;
        ScaleMin(S, 2 * j, g, scl, ml);
        ScaleMin(S, 2 * j + 1, g, sch, mh);
        for (int t = 0; t < M; ++t) {
          A[g][t] = hn::Add(A[g][t], hn::Add(hn::Mul(Total(s[0][g][t], s[1][g][t]), scl),
                                             hn::Mul(Total(s[2][g][t], s[3][g][t]), sch)));
          Bm[g][t] = hn::Add(Bm[g][t], hn::Add(hn::Mul(ml, hn::Set(DR(), x.Sum32(t, 2 * j))),
                                               hn::Mul(mh, hn::Set(DR(), x.Sum32(t, 2 * j + 1)))));
        }
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g), dmin = RowHalves(p + 32 + 2 * kL * g);
      for (int t = 0; t < M; ++t) {
        acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), A[g][t]), d, acc[g][t]);
        acc[g][t] = hn::NegMulAdd(hn::ConvertTo(DRF(), Bm[g][t]), dmin, acc[g][t]);
      }
    }
  }
};

// [d x16][int8 scale i x16, i < 16][per quarter 2n + h and c < 8: the pairs ql[l], ql[l + 32],
// qh[l - 32n] x16, l = 64n + 16h + 2c] (InterleaveUnits: the order read here). ql[l] holds the
// low 4 bits of weights l (low nibble) and l + 64 (high) of half n, ql[l + 32] those of l + 32
// and l + 96, and qh their high 2 bits (bits 0-1, 2-3, 4-5, 6-7 for l, l + 32, l + 64, l + 96).
// Each sub-block of 16 is summed in int32 (Σ q xq - 32 Σ xq, |.| <= 32 * 8191 * 16 < 2^24: exact
// in float), then scaled in float by d * scale.
struct Q6_Kx16 {
  static constexpr size_t kW = 256, kB = 210;
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    HWY_UNROLL(1)
    for (size_t n = 0; n < 2; ++n) {
      HWY_UNROLL(1)
      for (size_t h = 0; h < 2; ++h) Quarter<M>(p, p + 288 + 768 * (2 * n + h), n, h, x, acc);
    }
  }
  // Weights 128 n + 32 k + 16 h + j (k < 4, j < 16): sub-blocks 8 n + 2 k + h.
  template <int M>
  static HWY_INLINE void Quarter(const uint8_t* p, const uint8_t* q, size_t n, size_t h,
                                 const IActs& x, VRF (&acc)[kG][M]) {
    const VR16 k15 = hn::Set(DR16(), 15), k48 = hn::Set(DR16(), 48);
    const size_t o = 128 * n + 16 * h;
    VR s0[kG][M], s1[kG][M], s2[kG][M], s3[kG][M], o0[kG][M], o1[kG][M], o2[kG][M], o3[kG][M];
    HWY_UNROLL(4)
    for (size_t g = 0; g < kG; ++g) {
      HWY_UNROLL(4)
      for (int t = 0; t < M; ++t)
        s0[g][t] = s1[g][t] = s2[g][t] = s3[g][t] = o0[g][t] = o1[g][t] = o2[g][t] = o3[g][t] =
            hn::Zero(DR());
    }
    HWY_UNROLL(2)
    for (size_t c = 0; c < 8; ++c, q += 96) {
      VR16 x0[M], x1[M], x2[M], x3[M];
      HWY_UNROLL(4)
      for (int t = 0; t < M; ++t) {
        x0[t] = x.Pair(t, o + 2 * c);
        x1[t] = x.Pair(t, o + 32 + 2 * c);
        x2[t] = x.Pair(t, o + 64 + 2 * c);
        x3[t] = x.Pair(t, o + 96 + 2 * c);
      }
      HWY_UNROLL(4)
      for (size_t g = 0; g < kG; ++g) {
        const VR16 a = RowPairs(q + 2 * kL * g);
        const VR16 b = RowPairs(q + 32 + 2 * kL * g);
        const VR16 hb = RowPairs(q + 64 + 2 * kL * g);
        const VR16 q0 = hn::Or(hn::And(a, k15), hn::And(hn::ShiftLeft<4>(hb), k48));
        const VR16 q1 = hn::Or(hn::And(b, k15), hn::And(hn::ShiftLeft<2>(hb), k48));
        const VR16 q2 = hn::Or(hn::ShiftRight<4>(a), hn::And(hb, k48));
        const VR16 q3 = hn::Or(hn::ShiftRight<4>(b), hn::And(hn::ShiftRight<2>(hb), k48));
        HWY_UNROLL(4)
        for (int t = 0; t < M; ++t) {
          MulPairs(q0, x0[t], s0[g][t], o0[g][t]);
          MulPairs(q1, x1[t], s1[g][t], o1[g][t]);
          MulPairs(q2, x2[t], s2[g][t], o2[g][t]);
          MulPairs(q3, x3[t], s3[g][t], o3[g][t]);
        }
      }
    }
    const hn::Rebind<int8_t, DR> d8;
    const auto* sc = reinterpret_cast<const int8_t*>(p + 32);
    HWY_UNROLL(4)
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      const auto scale = [&](size_t k) HWY_ATTR {
        const size_t is = 8 * n + 2 * k + h;
        return hn::Mul(
            d, hn::ConvertTo(DRF(), hn::PromoteTo(DR(), hn::LoadU(d8, sc + 16 * is + kL * g))));
      };
      const VRF d0 = scale(0), d1 = scale(1), d2 = scale(2), d3 = scale(3);
      HWY_UNROLL(4)
      for (int t = 0; t < M; ++t) {
        const auto sub = [&](VR v, size_t k) HWY_ATTR {
          return hn::ConvertTo(DRF(),
                               hn::Sub(v, hn::Set(DR(), 32 * x.Sum16(t, 8 * n + 2 * k + h))));
        };
        VRF a = hn::MulAdd(sub(Total(s0[g][t], o0[g][t]), 0), d0, acc[g][t]);
        a = hn::MulAdd(sub(Total(s1[g][t], o1[g][t]), 1), d1, a);
        a = hn::MulAdd(sub(Total(s2[g][t], o2[g][t]), 2), d2, a);
        acc[g][t] = hn::MulAdd(sub(Total(s3[g][t], o3[g][t]), 3), d3, a);
      }
    }
  }
};

template <class IB, int M>
void GemvInterleavedInt(const GgmlRows& w, IActs x0, const float* dx, float* y, int64_t ldy) {
  const int64_t nb = w.cols / int64_t(IB::kW);
  constexpr int64_t R = kGgmlInterleaveRows;
  for (int64_t r0 = 0; r0 < w.rows; r0 += R) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(w.data) + size_t(r0) * w.row_bytes;
    VRF acc[kG][M];
    for (size_t g = 0; g < kG; ++g)
      for (int t = 0; t < M; ++t) acc[g][t] = hn::Zero(DRF());
    IActs x = x0;
    for (int64_t blk = 0; blk < nb; ++blk, p += R * IB::kB, x.Advance(IB::kW))
      IB::template Block<M>(p, x, acc);
    for (size_t g = 0; g < kG; ++g)
      for (int t = 0; t < M; ++t)
        hn::StoreU(hn::Mul(acc[g][t], hn::Set(DRF(), dx[t])), DRF(),
                   y + t * ldy + r0 + int64_t(g * kL));
  }
}
#endif

// M tokens of an interleaved matrix (B: the plain layout's decoder, IB: the interleaved kernel).
template <class B, class IB, int M>
void GemvInterleavedM(const GgmlRows& w, const float* x, float* y, int64_t ldy) {
#if HWY_TARGET != HWY_SCALAR
  TokenActs<M> a;
  if (a.Prepare(x, w.cols, true)) {
    GemvInterleavedInt<IB, M>(w, IActs{a.xq, a.s16, a.s32, w.cols}, a.dx, y, ldy);
    return;
  }
#endif
  ForEachRestoredGroup(w, [&](const GgmlRows& g, int64_t r0) HWY_ATTR {
    GemvFloat<B, M>(g, x, y + r0, ldy);
  });
}

template <class B, class IB>
void GemvInterleavedTokens(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  ByTokenRuns(m, [&](int64_t t, auto M) HWY_ATTR {
    GemvInterleavedM<B, IB, decltype(M)::value>(w, x + t * w.cols, y + t * ldy, ldy);
  });
}

#if HWY_TARGET == HWY_SCALAR
struct Q4_0x16 {};
struct Q8_0x16 {};
struct Q4_Kx16 {};
struct Q6_Kx16 {};
#endif

int ActivationMaxImpl() {
#if HWY_TARGET != HWY_SCALAR
  return XMax();
#else
  return 0;
#endif
}

template <class Fn>
bool WithBlock(int id, Fn&& fn) {
  using namespace ggml_dot;
  switch (id) {
    case kQ4_0: fn(BQ4_0{}); return true;
    case kQ4_1: fn(BQ4_1{}); return true;
    case kQ5_0: fn(BQ5_0{}); return true;
    case kQ5_1: fn(BQ5_1{}); return true;
    case kQ8_0: fn(BQ8_0{}); return true;
    case kQ2_K: fn(BQ2_K{}); return true;
    case kQ3_K: fn(BQ3_K{}); return true;
    case kQ4_K: fn(BQ4_K{}); return true;
    case kQ5_K: fn(BQ5_K{}); return true;
    case kQ6_K: fn(BQ6_K{}); return true;
    case kIQ4_NL: fn(BIQ4_NL{}); return true;
    case kIQ4_XS: fn(BIQ4_XS{}); return true;
    default: return false;
  }
}

bool SupportsImpl(int id) {
  return WithBlock(id, [](auto b) HWY_ATTR {
    (void)b;
  });
}

void DecodeRowsImpl(const GgmlRows& w, float* out) {
  const bool ok = WithBlock(w.type->id, [&](auto b) HWY_ATTR {
    if (!w.interleaved) {
      DecodeRowsT<decltype(b)>(w, out);
      return;
    }
    ForEachRestoredGroup(w, [&](const GgmlRows& g, int64_t r0) HWY_ATTR {
      DecodeRowsT<decltype(b)>(g, out + r0 * w.cols);
    });
  });
  QF_CHECK(ok, "no kernel for ggml type {}", w.type->name);
}

void GemvImpl(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  if (w.interleaved) {
    using namespace ggml_dot;
    switch (w.type->id) {
      case kQ4_0: GemvInterleavedTokens<BQ4_0, Q4_0x16>(w, x, m, y, ldy); return;
      case kQ8_0: GemvInterleavedTokens<BQ8_0, Q8_0x16>(w, x, m, y, ldy); return;
      case kQ4_K: GemvInterleavedTokens<BQ4_K, Q4_Kx16>(w, x, m, y, ldy); return;
      case kQ6_K: GemvInterleavedTokens<BQ6_K, Q6_Kx16>(w, x, m, y, ldy); return;
      default: QF_CHECK(false, "no interleaved kernel for ggml type {}", w.type->name);
    }
  }
  const bool ok = WithBlock(w.type->id, [&](auto b) HWY_ATTR {
    GemvTokens<decltype(b)>(w, x, m, y, ldy);
  });
  QF_CHECK(ok, "no kernel for ggml type {}", w.type->name);
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(SupportsImpl);
HWY_EXPORT(DecodeRowsImpl);
HWY_EXPORT(GemvImpl);
HWY_EXPORT(ActivationMaxImpl);

int GgmlGemvActivationMax() { return HWY_DYNAMIC_DISPATCH(ActivationMaxImpl)(); }

bool GgmlKernelSupports(const GgmlBlockType& t) {
  return !t.activation_only && HWY_DYNAMIC_DISPATCH(SupportsImpl)(t.id);
}

void GgmlDecodeRows(const GgmlRows& w, float* out) {
  HWY_DYNAMIC_DISPATCH(DecodeRowsImpl)(w, out);
}

void GgmlGemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvImpl)(w, x, m, y, ldy);
}

namespace {

// GgmlInterleave (kTo) or its inverse: every unit of every block of each 16-row group moved.
template <bool kTo>
void PermuteUnits(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                  std::byte* out) {
  const std::vector<ggml_dot::Unit> units = ggml_dot::InterleaveUnits(t.id);
  QF_CHECK(!units.empty() && rows % kGgmlInterleaveRows == 0 && cols % t.block == 0,
           "no interleaved layout for {} rows x {} cols of {}", rows, cols, t.name);
  constexpr size_t R = kGgmlInterleaveRows;
  const size_t B = t.block_bytes, nb = size_t(cols / t.block), row_bytes = nb * B;
  for (int64_t g = 0; g < rows; g += int64_t(R)) {
    const std::byte* src = in + size_t(g) * row_bytes;
    std::byte* dst = out + size_t(g) * row_bytes;
    for (size_t b = 0; b < nb; ++b) {
      size_t at = b * R * B;  // where the 16 rows' copies of the next unit go
      for (const ggml_dot::Unit& u : units) {
        for (size_t r = 0; r < R; ++r) {
          const size_t plain = r * row_bytes + b * B + u.from, inter = at + r * u.size;
          const std::byte* from = src + (kTo ? plain : inter);
          std::byte* to = dst + (kTo ? inter : plain);
          if (u.size == 2) {
            std::memcpy(to, from, 2);
          } else {
            std::memcpy(to, from, 1);
          }
        }
        at += R * u.size;
      }
    }
  }
}

}  // namespace

bool GgmlInterleaves(const GgmlBlockType& t) {
  return GgmlKernelSupports(t) && !ggml_dot::InterleaveUnits(t.id).empty();
}

void GgmlInterleave(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                    std::byte* out) {
  PermuteUnits<true>(t, in, rows, cols, out);
}

void GgmlDeinterleave(const GgmlBlockType& t, const std::byte* in, int64_t rows, int64_t cols,
                      std::byte* out) {
  PermuteUnits<false>(t, in, rows, cols, out);
}

void GgmlDecodeRowsRef(const GgmlRows& w, float* out) {
  std::vector<std::byte> plain;
  const std::byte* data = w.data;
  if (w.interleaved) {
    plain.resize(size_t(w.rows) * w.row_bytes);
    GgmlDeinterleave(*w.type, w.data, w.rows, w.cols, plain.data());
    data = plain.data();
  }
  for (int64_t r = 0; r < w.rows; ++r)
    w.type->decode(data + size_t(r) * w.row_bytes, w.cols, out + r * w.cols);
}

void GgmlGemvRef(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  std::vector<float> dec(static_cast<size_t>(w.rows * w.cols));
  GgmlDecodeRowsRef(w, dec.data());
  for (int64_t r = 0; r < w.rows; ++r) {
    const float* row = dec.data() + r * w.cols;
    for (int64_t t = 0; t < m; ++t) {
      double s = 0;
      for (int64_t k = 0; k < w.cols; ++k) s += double(row[k]) * x[t * w.cols + k];
      y[t * ldy + r] = float(s);
    }
  }
}

}  // namespace qf::kernels
#endif  // HWY_ONCE
