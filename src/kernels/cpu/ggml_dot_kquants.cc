// Highway kernels of ggml's k-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and the 16-row interleaved
// GEMVs of all five, compiled once per SIMD target (foreach_target).
// Contract: as ggml_dot.h; the drivers and the dispatch are ggml_dot-inl.h's.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/ggml_dot_kquants.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include "kernels/cpu/ggml_dot-inl.h"
#include "kernels/cpu/ggml_dot_family.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {

#if HWY_TARGET != HWY_SCALAR
// The interleaved kernels, named <type>x16 (16 rows side by side; not ggml's i-quants): see
// ggml_dot_legacy.cc's Q4_0x16 for Block's contract.
// Q2_K: [d x16][dmin x16][scale byte i x16, i < 16][unit u: codes 2u, 2u+1 x16, u < 32]; unit
// 16 n + c holds weights 128 n + 32 k + 2c, 2c + 1 at bits 2k (k < 4), of sub-block
// 8 n + 2 k + (c >= 8). Integer sums per super-block: A = Σ_sub sc Σ q xq (|A| <= 15 * 3 * 8191
// * 256 < 2^27) and B = Σ_sub m Σ xq; then acc += d A - dmin B.
// Q3_K (kThree): [d x16][scale byte i x16, i < 12][unit c: hmask 2c, 2c+1 x16, c < 16][the codes
// as Q2_K's]: the third bit of weight 128 n + 32 k + l at bit 4 n + k of hmask[l]. Per sub-block
// Σ q xq - 4 Σ xq (q in [0, 7]) times its signed scale: |A| <= 32 * 16 * (7 + 4) * 8191 * 16
// < 2^30; then acc += d A.
template <bool kThree>
struct QK23x16 {
  static constexpr size_t kW = 256;
  static constexpr size_t kB = kThree ? sizeof(ggml::BlockQ3_K) : sizeof(ggml::BlockQ2_K);
  // Sub-block j's scale for rows kL g ..: Q3_K's signed one (ggml::ScaleQ3 on kL rows at once),
  // or Q2_K's low nibble, with its min (the high nibble) in m.
  static HWY_INLINE VR Scale(const uint8_t* S, size_t j, size_t g, VR& m) {
    const auto b = [&](size_t i) HWY_ATTR { return RowBytes(S + 16 * i + kL * g); };
    if constexpr (!kThree) {
      m = hn::ShiftRight<4>(b(j));
      return hn::And(b(j), hn::Set(DR(), 15));
    }
    const VR low = j < 8 ? hn::And(b(j), hn::Set(DR(), 15)) : hn::ShiftRight<4>(b(j - 8));
    const VR high = hn::And(hn::ShiftRightSame(b(8 + j % 4), int(2 * (j / 4))), hn::Set(DR(), 3));
    return hn::Sub(hn::Or(low, hn::ShiftLeft<4>(high)), hn::Set(DR(), 32));
  }
  template <int M>
  static HWY_INLINE void Block(const uint8_t* p, const IActs& x, VRF (&acc)[kG][M]) {
    const uint8_t* S = p + (kThree ? 32 : 64);
    const uint8_t* hm = S + 12 * 16;  // Q3_K's third bits
    const uint8_t* q = kThree ? hm + 16 * 32 : S + 16 * 16;
    const VR16 k3 = hn::Set(DR16(), 3), k4 = hn::Set(DR16(), 4);
    VR A[kG][M], Bm[kG][M];
    for (size_t g = 0; g < kG; ++g)
      for (int t = 0; t < M; ++t) A[g][t] = Bm[g][t] = hn::Zero(DR());
    HWY_UNROLL(1)
    for (size_t n = 0; n < 2; ++n) {
      HWY_UNROLL(1)
      for (size_t h = 0; h < 2; ++h, q += 8 * 32) {  // sub-blocks 8 n + 2 k + h, k < 4
        VR s[8][kG][M];                              // per k: the sums and their odd halves
        ZeroAll(s);
        HWY_UNROLL(2)
        for (size_t c = 0; c < 8; ++c) {
          const size_t o = 128 * n + 16 * h + 2 * c;
          VR16 xk[4][M];
          for (int t = 0; t < M; ++t)
            for (size_t k = 0; k < 4; ++k) xk[k][t] = x.Pair(t, o + 32 * k);
          for (size_t g = 0; g < kG; ++g) {
            const VR16 v = RowPairs(q + 32 * c + 2 * kL * g);
            VR16 q0 = hn::And(v, k3), q1 = hn::And(hn::ShiftRight<2>(v), k3);
            VR16 q2 = hn::And(hn::ShiftRight<4>(v), k3), q3 = hn::ShiftRight<6>(v);
            if constexpr (kThree) {  // the third bits of the four k (bit 4 n + k), to bit 2
              const VR16 hb =
                  hn::ShiftRightSame(RowPairs(hm + 32 * (8 * h + c) + 2 * kL * g), int(4 * n));
              q0 = hn::Or(q0, hn::And(hn::ShiftLeft<2>(hb), k4));
              q1 = hn::Or(q1, hn::And(hn::ShiftLeft<1>(hb), k4));
              q2 = hn::Or(q2, hn::And(hb, k4));
              q3 = hn::Or(q3, hn::And(hn::ShiftRight<1>(hb), k4));
            }
            for (int t = 0; t < M; ++t) {
              MulPairs(q0, xk[0][t], s[0][g][t], s[1][g][t]);
              MulPairs(q1, xk[1][t], s[2][g][t], s[3][g][t]);
              MulPairs(q2, xk[2][t], s[4][g][t], s[5][g][t]);
              MulPairs(q3, xk[3][t], s[6][g][t], s[7][g][t]);
            }
          }
        }
        for (size_t g = 0; g < kG; ++g) {
          for (size_t k = 0; k < 4; ++k) {
            const size_t is = 8 * n + 2 * k + h;
            VR m = hn::Zero(DR());
            const VR sc = Scale(S, is, g, m);
            for (int t = 0; t < M; ++t) {
              VR sum = Total(s[2 * k][g][t], s[2 * k + 1][g][t]);
              if constexpr (kThree) {
                sum = hn::Sub(sum, hn::Set(DR(), 4 * x.Sum16(t, is)));
              } else {
                Bm[g][t] = hn::Add(Bm[g][t], hn::Mul(m, hn::Set(DR(), x.Sum16(t, is))));
              }
              A[g][t] = hn::Add(A[g][t], hn::Mul(sum, sc));
            }
          }
        }
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g);
      for (int t = 0; t < M; ++t) {
        acc[g][t] = hn::MulAdd(hn::ConvertTo(DRF(), A[g][t]), d, acc[g][t]);
        if constexpr (!kThree) {
          const VRF dmin = RowHalves(p + 32 + 2 * kL * g);
          acc[g][t] = hn::NegMulAdd(hn::ConvertTo(DRF(), Bm[g][t]), dmin, acc[g][t]);
        }
      }
    }
  }
};
using Q2_Kx16 = QK23x16<false>;
using Q3_Kx16 = QK23x16<true>;

// [d x16][dmin x16][scale byte i x16, i < 12]([Q5_K: unit c: qh 2c, 2c+1 x16, c < 16])[unit u:
// codes 2u, 2u+1 x16, u < 64]; unit 16 j + c holds weights 2c, 2c+1 of sub-blocks 2j (low
// nibbles) and 2j + 1 (high), and Q5_K's qh unit c their fifth bits (bits 2j and 2j + 1).
// Integer sums: A = Σ_sub sc Σ q xq and B = Σ_sub m Σ xq; then acc += d A - dmin B. Q4_K sums A
// over the super-block (|A| <= 63 * 15 * 8191 * 256 < 2^31); Q5_K's codes reach 31, so its A is
// summed per pair of sub-blocks (63 * 31 * 8191 * 64 < 2^31) and the four pairs in float.
template <bool kFive>
struct QK45x16 {
  static constexpr size_t kW = 256;
  static constexpr size_t kB = kFive ? sizeof(ggml::BlockQ5_K) : sizeof(ggml::BlockQ4_K);
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
    const uint8_t* qh = p + 256;  // Q5_K's fifth bits
    const uint8_t* q = p + (kFive ? 256 + 32 * 16 : 256);
    const VR16 k16 = hn::Set(DR16(), 16);
    VR A[kG][M], Bm[kG][M];
    VRF Af[kG][M];  // Q5_K: A's pairs of sub-blocks, summed in float
    for (size_t g = 0; g < kG; ++g)
      for (int t = 0; t < M; ++t) {
        A[g][t] = Bm[g][t] = hn::Zero(DR());
        Af[g][t] = hn::Zero(DRF());
      }
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
          VR16 lo = hn::And(v, hn::Set(DR16(), 15)), hi = hn::ShiftRight<4>(v);
          if constexpr (kFive) {  // bit 2j (low nibbles) or 2j + 1 (high) of qh, to bit 4
            const VR16 h = hn::ShiftRightSame(RowPairs(qh + 32 * c + 2 * kL * g), int(2 * j));
            lo = hn::Or(lo, hn::And(hn::ShiftLeft<4>(h), k16));
            hi = hn::Or(hi, hn::And(hn::ShiftLeft<3>(h), k16));
          }
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
          const VR a = hn::Add(hn::Mul(Total(s[0][g][t], s[1][g][t]), scl),
                               hn::Mul(Total(s[2][g][t], s[3][g][t]), sch));
          if constexpr (kFive) {
            Af[g][t] = hn::Add(Af[g][t], hn::ConvertTo(DRF(), a));
          } else {
            A[g][t] = hn::Add(A[g][t], a);
          }
          Bm[g][t] = hn::Add(Bm[g][t], hn::Add(hn::Mul(ml, hn::Set(DR(), x.Sum32(t, 2 * j))),
                                               hn::Mul(mh, hn::Set(DR(), x.Sum32(t, 2 * j + 1)))));
        }
      }
    }
    for (size_t g = 0; g < kG; ++g) {
      const VRF d = RowHalves(p + 2 * kL * g), dmin = RowHalves(p + 32 + 2 * kL * g);
      for (int t = 0; t < M; ++t) {
        const VRF a = kFive ? Af[g][t] : hn::ConvertTo(DRF(), A[g][t]);
        acc[g][t] = hn::MulAdd(a, d, acc[g][t]);
        acc[g][t] = hn::NegMulAdd(hn::ConvertTo(DRF(), Bm[g][t]), dmin, acc[g][t]);
      }
    }
  }
};
using Q4_Kx16 = QK45x16<false>;
using Q5_Kx16 = QK45x16<true>;

// [d x16][int8 scale i x16, i < 16][per quarter 2n + h and c < 8: the pairs ql[l], ql[l + 32],
// qh[l - 32n] x16, l = 64n + 16h + 2c] (InterleaveUnits: the order read here). ql[l] holds the
// low 4 bits of weights l (low nibble) and l + 64 (high) of half n, ql[l + 32] those of l + 32
// and l + 96, and qh their high 2 bits (bits 0-1, 2-3, 4-5, 6-7 for l, l + 32, l + 64, l + 96).
// Each sub-block of 16 is summed in int32 (Σ q xq - 32 Σ xq, |.| <= 32 * 8191 * 16 < 2^24: exact
// in float), then scaled in float by d * scale.
struct Q6_Kx16 {
  static constexpr size_t kW = 256, kB = sizeof(ggml::BlockQ6_K);
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
#else
struct Q2_Kx16 {};
struct Q3_Kx16 {};
struct Q4_Kx16 {};
struct Q5_Kx16 {};
struct Q6_Kx16 {};
#endif

// Q2_K, Q3_K, Q6_K have sub-blocks of 16: an emit pairs weights l and l + 16 of one sub-block
// at a time for N < 16; for N = 16 the two halves of a vector pair are two sub-blocks, so those
// emit one vector at a time (the second of the pair all zero codes).
struct BQ2_K {  // x = d*sc * q - dmin*m
  using Block = ggml::BlockQ2_K;
  using Interleaved = Q2_Kx16;
  static constexpr size_t kW = 256, kB = sizeof(Block);
  static constexpr bool kMin = true;
  static constexpr bool kSuper = true;
  static constexpr int kSpan = 16;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    uint8_t sc[16], mn[16];
    HWY_UNROLL(16)
    for (int j = 0; j < 16; ++j) {
      sc[j] = b.scales[j] & 0xF;
      mn[j] = b.scales[j] >> 4;
    }
    float dl[16], ml[16];
    const float d = Half(b.d);
    Scales<16>(d, sc, dl);
    Scales<16>(Half(b.dmin), mn, ml);
    const uint8_t* q = b.qs;
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

struct BQ3_K {  // x = d*sc * (q - (high bit ? 0 : 4))
  using Block = ggml::BlockQ3_K;
  using Interleaved = Q3_Kx16;
  static constexpr size_t kW = 256, kB = sizeof(Block);
  static constexpr bool kMin = false;
  static constexpr bool kSuper = true;
  static constexpr int kSpan = 16;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    int8_t sc[16];
    HWY_UNROLL(16)
    for (int j = 0; j < 16; ++j) sc[j] = int8_t(ggml::ScaleQ3(j, b.scales));
    float dl[16];
    const float d = Half(b.d);
    Scales<16>(d, sc, dl);
    const uint8_t* q = b.qs;
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
          const VI h0 = hn::And(hn::ShiftRightSame(Bytes(b.hmask + l), hb), I(1));
          const VI h1 = hn::And(hn::ShiftRightSame(Bytes(b.hmask + 16 + l), hb), I(1));
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
template <class Block>
HWY_INLINE float ScalesK4(const Block& b, uint8_t* sc, float* dl, float* ml) {
  uint8_t mn[8];
  ggml::GetScalesMinsK4(b.scales, sc, mn);
  const float d = Half(b.d);
  Scales<8>(d, sc, dl);
  Scales<8>(Half(b.dmin), mn, ml);
  return d;
}

// Q4_K: x = d*sc * q - dmin*m. Q5_K (kFive): the same with a fifth bit per weight in qh (bit 2c
// or 2c + 1 of qh[l] for chunk c's low and high nibbles).
template <bool kFive>
struct BQK45 {
  using Block = std::conditional_t<kFive, ggml::BlockQ5_K, ggml::BlockQ4_K>;
  static constexpr size_t kW = 256, kB = sizeof(Block);
  static constexpr bool kMin = true;
  static constexpr bool kSuper = true;
  static constexpr int kSpan = 32;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    float dl[8], ml[8];
    uint8_t sc[8];
    const float d = ScalesK4(b, sc, dl, ml);
    const uint8_t* qh = nullptr;
    if constexpr (kFive) qh = b.qh;
    const uint8_t* ql = b.qs;
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
struct BQ4_K : BQK45<false> {
  using Interleaved = Q4_Kx16;
};
struct BQ5_K : BQK45<true> {
  using Interleaved = Q5_Kx16;
};

struct BQ6_K {  // x = d*sc * (q - 32)
  using Block = ggml::BlockQ6_K;
  using Interleaved = Q6_Kx16;
  static constexpr size_t kW = 256, kB = sizeof(Block);
  static constexpr bool kMin = false;
  static constexpr bool kSuper = true;
  static constexpr int kSpan = 16;  // weights per pair of factors (a, c)
  template <class E>
  static HWY_INLINE void Run(const uint8_t* p, E& e) {
    const Block& b = BlockAt<Block>(p);
    const size_t N = hn::Lanes(DF());
    float dl[16];
    const float d = Half(b.d);
    const int8_t* isc = b.scales;
    Scales<16>(d, isc, dl);
    const uint8_t* ql = b.ql;
    const uint8_t* qh = b.qh;
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
            hn::Or(hn::And(c, I(15)), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<2>(h), I(3)))),
            I(32));
        const VI q3 = hn::Sub(
            hn::Or(hn::ShiftRight<4>(a), hn::ShiftLeft<4>(hn::And(hn::ShiftRight<4>(h), I(3)))),
            I(32));
        const VI q4 =
            hn::Sub(hn::Or(hn::ShiftRight<4>(c), hn::ShiftLeft<4>(hn::ShiftRight<6>(h))), I(32));
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

void DecodeRowsKQuant(const GgmlRows& w, float* out) {
  DecodeRowsOf<ggml::GgmlFamily::kKQuant>(w, out);
}
void GemvKQuant(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  GemvOf<ggml::GgmlFamily::kKQuant>(w, x, m, y, ldy);
}
GgmlLevelsInfo DecodeLevelsKQuant(const GgmlRows& w, int8_t* q, float* a, float* c) {
  return DecodeLevelsOf<ggml::GgmlFamily::kKQuant>(w, q, a, c);
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(DecodeRowsKQuant);
HWY_EXPORT(GemvKQuant);
HWY_EXPORT(DecodeLevelsKQuant);

namespace ggml_dot {
namespace {

void DecodeRows(const GgmlRows& w, float* out) { HWY_DYNAMIC_DISPATCH(DecodeRowsKQuant)(w, out); }
void Gemv(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvKQuant)(w, x, m, y, ldy);
}
GgmlLevelsInfo DecodeLevels(const GgmlRows& w, int8_t* q, float* a, float* c) {
  return HWY_DYNAMIC_DISPATCH(DecodeLevelsKQuant)(w, q, a, c);
}

// The order Q2_Kx16, Q3_Kx16, Q4_Kx16, Q5_Kx16 and Q6_Kx16 read the units in.
std::vector<Unit> InterleaveUnits(int id) {
  std::vector<Unit> u;
  const auto run = [&](size_t from, size_t to, size_t size) {
    for (size_t o = from; o < to; o += size) u.push_back({o, size});
  };
  switch (uint32_t(id)) {
    case ggml::GgmlId("Q2_K"): {  // d, dmin; the 16 scale bytes; codes in pairs
      using B = ggml::BlockQ2_K;
      run(offsetof(B, d), sizeof(B), 2);
      run(offsetof(B, scales), offsetof(B, qs), 1);
      run(offsetof(B, qs), offsetof(B, d), 2);
      break;
    }
    case ggml::GgmlId("Q3_K"): {  // d; the 12 scale bytes; the third bits, then codes, in pairs
      using B = ggml::BlockQ3_K;
      run(offsetof(B, d), sizeof(B), 2);
      run(offsetof(B, scales), offsetof(B, d), 1);
      run(offsetof(B, hmask), offsetof(B, qs), 2);
      run(offsetof(B, qs), offsetof(B, scales), 2);
      break;
    }
    case ggml::GgmlId("Q4_K"): {  // d, dmin; the 12 scale bytes; codes in pairs
      using B = ggml::BlockQ4_K;
      run(offsetof(B, d), offsetof(B, scales), 2);
      run(offsetof(B, scales), offsetof(B, qs), 1);
      run(offsetof(B, qs), sizeof(B), 2);
      break;
    }
    case ggml::GgmlId("Q5_K"): {  // as Q4_K, with the fifth bits' qh in pairs before the codes
      using B = ggml::BlockQ5_K;
      static_assert(offsetof(B, scales) + 12 == offsetof(B, qh) &&
                    offsetof(B, qh) + 32 == offsetof(B, qs));
      run(offsetof(B, d), offsetof(B, scales), 2);
      run(offsetof(B, scales), offsetof(B, qh), 1);
      run(offsetof(B, qh), offsetof(B, qs), 2);
      run(offsetof(B, qs), sizeof(B), 2);
      break;
    }
    case ggml::GgmlId("Q6_K"): {  // d; the 16 scales; per quarter 2n + h and c < 8: ql[l],
      using B = ggml::BlockQ6_K;  // ql[l + 32], qh[l - 32n] in pairs, l = 64n + 16h + 2c
      run(offsetof(B, d), sizeof(B), 2);
      run(offsetof(B, scales), offsetof(B, d), 1);
      for (size_t n = 0; n < 2; ++n)
        for (size_t h = 0; h < 2; ++h)
          for (size_t c = 0; c < 8; ++c) {
            const size_t l = 64 * n + 16 * h + 2 * c;
            u.push_back({offsetof(B, ql) + l, 2});
            u.push_back({offsetof(B, ql) + l + 32, 2});
            u.push_back({offsetof(B, qh) + l - 32 * n, 2});
          }
      break;
    }
    default:
      break;
  }
  return u;
}

}  // namespace

const Family kKQuantKernels{DecodeRows, Gemv, InterleaveUnits, DecodeLevels};

}  // namespace ggml_dot
}  // namespace qf::kernels
#endif  // HWY_ONCE
