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

// Lanes(DF) E4M3 bytes at p as floats, exactly.
HWY_INLINE hn::Vec<DF> E4M3(const uint8_t* p) {
  const DF df;
  const DU du;
  const auto v = hn::PromoteTo(du, hn::LoadU(D8(), p));
  const auto mag = hn::And(v, hn::Set(du, 0x7Fu));
  const auto bits =
      hn::Or(hn::ShiftLeft<20>(mag), hn::ShiftLeft<24>(hn::And(v, hn::Set(du, 0x80u))));
  const auto f = hn::Mul(hn::BitCast(df, bits), hn::Set(df, 1.329227995784916e36f));  // 2^120
  return hn::IfThenElse(hn::RebindMask(df, hn::Eq(mag, hn::Set(du, 0x7Fu))),
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

template <int M>
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
      const auto v0 = E4M3(c + k), v1 = E4M3(c + k + NF);
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

void GemvImpl(const Fp8Rows& w, const float* x, int64_t m, float* y, int64_t ldy) {
  for (int64_t t0 = 0; t0 < m; t0 += 4) {
    const int64_t n = std::min<int64_t>(4, m - t0);
    const float* xt = x + t0 * w.cols;
    float* yt = y + t0 * ldy;
    switch (n) {
      case 1:
        GemvT<1>(w, xt, yt, ldy);
        break;
      case 2:
        GemvT<2>(w, xt, yt, ldy);
        break;
      case 3:
        GemvT<3>(w, xt, yt, ldy);
        break;
      default:
        GemvT<4>(w, xt, yt, ldy);
        break;
    }
  }
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
