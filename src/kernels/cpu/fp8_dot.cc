// The FP8 E4M3 kernels of fp8_dot.h for each Highway target, and the plain references.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/fp8_dot.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include "formats/fp8.h"
#include "kernels/cpu/fp8_dot.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using D8 = hn::Rebind<uint8_t, DF>;

// Lanes(DF) E4M3 bytes at p as floats, exactly: the byte in a lane's top 8 bits, an arithmetic
// shift by 4 puts the magnitude at a float's bits 20-26 (3 mantissa bits at its top, 4 exponent
// bits at the bottom of its exponent) and copies the sign down, the mask keeps sign and
// magnitude, and 2^120 rebiases the exponent (subnormals included). With kNan the codes 0x7f /
// 0xff become NaN (without, ±480: only for rows known to hold none, Fp8Rows::nan_free).
template <bool kNan = true>
HWY_INLINE hn::Vec<DF> E4M3(const uint8_t* p) {
  const DF df;
  const DU du;
  const hn::RebindToSigned<DF> di;
  const auto top = hn::BitCast(di, hn::ShiftLeft<24>(hn::PromoteTo(du, hn::LoadU(D8(), p))));
  const auto bits = hn::And(hn::ShiftRight<4>(top), hn::Set(di, int32_t(0x87F00000u)));
  const auto f = hn::Mul(hn::BitCast(df, bits), hn::Set(df, 1.329227995784916e36f));  // 2^120
  if constexpr (!kNan) return f;
  const auto nan_code = hn::Eq(hn::And(bits, hn::Set(di, 0x07F00000)), hn::Set(di, 0x07F00000));
  return hn::IfThenElse(hn::RebindMask(df, nan_code),
                        hn::Set(df, std::numeric_limits<float>::quiet_NaN()), f);
}

void DecodeRowsImpl(const Fp8Rows& w, float* out) {
  const DF df;
  const int64_t NF = int64_t(hn::Lanes(df));
  const std::array<float, 256>& lut = F8E4M3Values();
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* c = w.codes + size_t(r) * w.row_bytes;
    float* o = out + r * w.cols;
    const auto s = hn::Set(df, w.scales[r]);
    int64_t k = 0;
    for (; k + NF <= w.cols; k += NF) hn::StoreU(hn::Mul(E4M3(c + k), s), df, o + k);
    for (; k < w.cols; ++k) o[k] = lut[c[k]] * w.scales[r];
  }
}

template <int M, bool kNan>
void GemvT(const Fp8Rows& w, const float* x, float* y, int64_t ldy) {
  const DF df;
  const int64_t NF = int64_t(hn::Lanes(df)), K = w.cols;
  const std::array<float, 256>& lut = F8E4M3Values();
  for (int64_t r = 0; r < w.rows; ++r) {
    const uint8_t* c = w.codes + size_t(r) * w.row_bytes;
    hn::Vec<DF> a0[M], a1[M];
    HWY_UNROLL(8)
    for (int t = 0; t < M; ++t) a0[t] = a1[t] = hn::Zero(df);
    int64_t k = 0;
    for (; k + 2 * NF <= K; k += 2 * NF) {
      const auto v0 = E4M3<kNan>(c + k), v1 = E4M3<kNan>(c + k + NF);
      HWY_UNROLL(8)
      for (int t = 0; t < M; ++t) {
        a0[t] = hn::MulAdd(v0, hn::LoadU(df, x + t * K + k), a0[t]);
        a1[t] = hn::MulAdd(v1, hn::LoadU(df, x + t * K + k + NF), a1[t]);
      }
    }
    for (int t = 0; t < M; ++t) {
      float s = hn::GetLane(hn::SumOfLanes(df, hn::Add(a0[t], a1[t])));
      for (int64_t i = k; i < K; ++i) s += lut[c[i]] * x[t * K + i];
      y[t * ldy + r] = s * w.scales[r];
    }
  }
}

template <bool kNan>
void GemvTokens(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    const int64_t n = std::min<int64_t>(4, m - t0);
    const float* xt = x + t0 * w.cols;
    float* yt = y + t0 * ldy;
    switch (n) {
      case 1:
        GemvT<1, kNan>(w, xt, yt, ldy);
        break;
      case 2:
        GemvT<2, kNan>(w, xt, yt, ldy);
        break;
      case 3:
        GemvT<3, kNan>(w, xt, yt, ldy);
        break;
      default:
        GemvT<4, kNan>(w, xt, yt, ldy);
        break;
    }
  }
}

void GemvImpl(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  if (w.nan_free)
    GemvTokens<false>(w, x, m, y, ldy);
  else
    GemvTokens<true>(w, x, m, y, ldy);
}

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {
HWY_EXPORT(DecodeRowsImpl);
HWY_EXPORT(GemvImpl);

void Fp8DecodeRows(const Fp8Rows& w, float* out) { HWY_DYNAMIC_DISPATCH(DecodeRowsImpl)(w, out); }

void Fp8Gemv(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvImpl)(w, x, m, y, ldy);
}

bool Fp8NanFree(const uint8_t* codes, size_t n) {
  return std::none_of(codes, codes + n, [](uint8_t b) { return (b & 0x7F) == 0x7F; });
}

void Fp8DecodeRowsRef(const Fp8Rows& w, float* out) {
  const std::array<float, 256>& lut = F8E4M3Values();
  for (int64_t r = 0; r < w.rows; ++r)
    for (int64_t k = 0; k < w.cols; ++k)
      out[r * w.cols + k] = lut[w.codes[size_t(r) * w.row_bytes + size_t(k)]] * w.scales[r];
}

void Fp8GemvRef(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  const std::array<float, 256>& lut = F8E4M3Values();
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < w.rows; ++r) {
      double s = 0.0;
      for (int64_t k = 0; k < w.cols; ++k)
        s += double(lut[w.codes[size_t(r) * w.row_bytes + size_t(k)]]) * double(x[t * w.cols + k]);
      y[t * ldy + r] = float(s * double(w.scales[r]));
    }
}

}  // namespace qf::kernels
#endif
