// Per-target internals of the ggml block kernels (ggml_dot.h), included by each family's file
// (ggml_dot_legacy.cc, ggml_dot_kquants.cc, ggml_dot_iq4.cc) and ggml_dot.cc inside Highway's
// foreach_target: the vector helpers, the drivers that run a decoder (decode to floats, float
// and integer GEMVs, interleaved rows) and the dispatch from a type id to its decoder, expanded
// from formats/ggml_types.h's list. Those files are built with -ffp-contract=off
// (CMakeLists.txt): the decoders' products and sums must round exactly as the reference decoders'
// do; the GEMV's fused multiply-adds are explicit (MulAdd).
// Vectors hold N = min(float lanes, 16) weights, so every sub-block (16 or 32 weights) is a whole
// number of vectors: on AVX-512 the int16 levels fill 256-bit registers, as in llama.cpp's AVX2
// kernels, and the float accumulators 256 or 512 bits.
#if defined(QF_KERNELS_CPU_GGML_DOT_INL_H_) == defined(HWY_TARGET_TOGGLE)
#ifdef QF_KERNELS_CPU_GGML_DOT_INL_H_
#undef QF_KERNELS_CPU_GGML_DOT_INL_H_
#else
#define QF_KERNELS_CPU_GGML_DOT_INL_H_
#endif

#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"
#include "formats/ggml_blocks.h"
#include "formats/ggml_types.h"
#include "kernels/cpu/ggml_dot.h"

#ifndef QF_ALWAYS_INLINE
#define QF_ALWAYS_INLINE __attribute__((always_inline))
#endif

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
  return F16ToF32(uint16_t(p[0] | p[1] << 8));
#endif
}
HWY_INLINE float Half(const ggml::F16& h) { return Half(h.bytes); }

using DF = hn::CappedTag<float, 16>;
using DI = hn::Rebind<int16_t, DF>;  // a block's codes: N int16 lanes
using DU = hn::RebindToUnsigned<DI>;
using D32 = hn::Rebind<int32_t, DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// N bytes from p, each widened to an int16 lane.
HWY_INLINE VI Bytes(const uint8_t* p) {
  const hn::Rebind<uint8_t, DI> d8;
  return hn::PromoteTo(DI(), hn::LoadU(d8, p));
}
HWY_INLINE VI SignedBytes(const int8_t* p) {
  const hn::Rebind<int8_t, DI> d8;
  return hn::PromoteTo(DI(), hn::LoadU(d8, p));
}
// The block at p (blocks are byte aligned).
template <class Block>
HWY_INLINE const Block& BlockAt(const uint8_t* p) {
  return *reinterpret_cast<const Block*>(p);
}
HWY_INLINE VF F(VI v) { return hn::ConvertTo(DF(), hn::PromoteTo(D32(), v)); }
HWY_INLINE VI I(int v) { return hn::Set(DI(), int16_t(v)); }
HWY_INLINE VF S(float v) { return hn::Set(DF(), v); }

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

// Each decoder B<Name> has Block (its formats/ggml_types.h struct), kW weights and kB =
// sizeof(Block) bytes per block, kMin (a min is subtracted), kSuper (integer sub-block scales)
// and, where a 16-row interleaved layout exists, Interleaved (its <Name>x16 kernel). Declared
// here from the list, defined in its family's file.
#define QF_GGML_DECLARE_DECODER(T, ...) struct B##T;
QF_GGML_TYPES(QF_GGML_DECLARE_DECODER, QF_GGML_SKIP, QF_GGML_SKIP)
#undef QF_GGML_DECLARE_DECODER

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

// The levels of the integer prefill GEMM (GgmlDecodeLevels): each emit's int16 levels narrowed
// to int8 (every type's levels fit) and its factors stored once per 16 weights.
template <class B>
struct LevelEmitter {
  int8_t* q;
  float *a, *c;
  HWY_INLINE void Put(size_t i, VI v, float af, float cf) const {
    const hn::Rebind<int8_t, DI> d8;
    hn::StoreU(hn::DemoteTo(d8, v), d8, q + i);
    a[i / 16] = af;
    c[i / 16] = B::kMin ? cf : 0.f;
  }
  HWY_INLINE void Emit(size_t i0, VI q0, size_t i1, VI q1, float af, float cf, int) const {
    Put(i0, q0, af, cf);
    if (i1 != kNone) Put(i1, q1, af, cf);
  }
  HWY_INLINE void End(float, const float*, int, int) const {}
};

template <class B>
void DecodeLevelsT(const GgmlRows& w, int8_t* q, float* a, float* c) {
  const int64_t nb = w.cols / int64_t(B::kW), K = w.cols;
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* p = reinterpret_cast<const uint8_t*>(w.data) + size_t(r) * w.row_bytes;
    for (int64_t blk = 0; blk < nb; ++blk, p += B::kB) {
      const int64_t k0 = blk * int64_t(B::kW);
      LevelEmitter<B> e{q + r * K + k0, a + (r * K + k0) / 16, c + (r * K + k0) / 16};
      B::Run(p, e);
    }
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
    for (int t = 0; t < M; ++t)
      acc[k][t] = hn::MulAdd(v0, hn::LoadU(df, x + t * K + i0), acc[k][t]);
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
      const VF s =
          hn::Add(hn::Add(e0.acc[0][t], e0.acc[1][t]), hn::Add(e1.acc[0][t], e1.acc[1][t]));
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
  const int16_t* xq;  // token 0's fixed-point activations at this block
  const float* xs16;  // token 0's sums of x over 16 weights, at this block
  const float* xs32;  // ... over 32
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
inline bool QuantizeActivations(const float* x, int64_t m, int64_t K, int16_t* xq, float* dx,
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
  ForEachRestoredGroup(
      w, [&](const GgmlRows& g, int64_t r0) HWY_ATTR { GemvFloat<B, M>(g, x, y + r0, ldy); });
}

template <class B, class IB>
void GemvInterleavedTokens(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  ByTokenRuns(m, [&](int64_t t, auto M) HWY_ATTR {
    GemvInterleavedM<B, IB, decltype(M)::value>(w, x + t * w.cols, y + t * ldy, ldy);
  });
}

// ---- dispatch: type id -> decoder, for the types of family kF (the list's family column) -----

template <ggml::GgmlFamily kF, ggml::GgmlFamily kOf, class B, class Fn>
HWY_INLINE bool CallIfInFamily(Fn& fn) {
  if constexpr (kF == kOf) {
    fn(B{});
    return true;
  } else {
    return false;
  }
}

template <ggml::GgmlFamily kF, class Fn>
bool WithBlock(int id, Fn&& fn) {
  switch (id) {
#define QF_GGML_DECODER_CASE(T, id, type_name, weights, bytes, family) \
  case id:                                                             \
    return CallIfInFamily<kF, ggml::GgmlFamily::family, B##T>(fn);
    QF_GGML_TYPES(QF_GGML_DECODER_CASE, QF_GGML_SKIP, QF_GGML_SKIP)
#undef QF_GGML_DECODER_CASE
    default:
      return false;
  }
}

template <ggml::GgmlFamily kF>
void DecodeRowsOf(const GgmlRows& w, float* out) {
  const bool ok = WithBlock<kF>(w.type->id, [&](auto b) HWY_ATTR {
    if (!w.interleaved) {
      DecodeRowsT<decltype(b)>(w, out);
      return;
    }
    ForEachRestoredGroup(w, [&](const GgmlRows& g, int64_t r0)
                                HWY_ATTR { DecodeRowsT<decltype(b)>(g, out + r0 * w.cols); });
  });
  QF_CHECK(ok, "no kernel for ggml type {}", w.type->name);
}

template <ggml::GgmlFamily kF>
GgmlLevelsInfo DecodeLevelsOf(const GgmlRows& w, int8_t* q, float* a, float* c) {
  GgmlLevelsInfo info;
  const bool ok = WithBlock<kF>(w.type->id, [&](auto b) HWY_ATTR {
    using B = decltype(b);
    info = {B::kSpan, B::kMin};
    if (!w.interleaved) {
      DecodeLevelsT<B>(w, q, a, c);
      return;
    }
    ForEachRestoredGroup(w, [&](const GgmlRows& g, int64_t r0) HWY_ATTR {
      const int64_t o = r0 * w.cols;
      DecodeLevelsT<B>(g, q + o, a + o / 16, c + o / 16);
    });
  });
  QF_CHECK(ok, "no kernel for ggml type {}", w.type->name);
  return info;
}

template <ggml::GgmlFamily kF>
void GemvOf(const GgmlRows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  const bool ok = WithBlock<kF>(w.type->id, [&](auto b) HWY_ATTR {
    using B = decltype(b);
    if (!w.interleaved) {
      GemvTokens<B>(w, x, m, y, ldy);
    } else if constexpr (requires { typename B::Interleaved; }) {
      GemvInterleavedTokens<B, typename B::Interleaved>(w, x, m, y, ldy);
    } else {
      QF_CHECK(false, "no interleaved kernel for ggml type {}", w.type->name);
    }
  });
  QF_CHECK(ok, "no kernel for ggml type {}", w.type->name);
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#endif  // QF_KERNELS_CPU_GGML_DOT_INL_H_
