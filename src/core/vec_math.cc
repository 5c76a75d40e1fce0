// Highway implementations of vec_math.h, compiled once per SIMD target (foreach_target) and
// chosen at run time; must match the *Ref loops at the bottom of this file.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/vec_math.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/vec_math.h"

HWY_BEFORE_NAMESPACE();
namespace qf::vec::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

float MaxValueImpl(const float* x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = int64_t(hn::Lanes(d));
  auto m = hn::Set(d, -std::numeric_limits<float>::infinity());
  int64_t i = 0;
  for (; i + N <= n; i += N) m = hn::Max(m, hn::LoadU(d, x + i));
  float r = hn::GetLane(hn::MaxOfLanes(d, m));
  for (; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

// Weights as floats: fp32 as they are, bf16 widened in registers (exact).
template <class D>
HWY_INLINE hn::Vec<D> LoadW(D d, const float* p) {
  return hn::LoadU(d, p);
}
template <class D>
HWY_INLINE hn::Vec<D> LoadW(D d, const hwy::bfloat16_t* p) {
  return hn::PromoteTo(d, hn::LoadU(hn::Rebind<hwy::bfloat16_t, D>(), p));
}
inline float ToFloat(float v) { return v; }
inline float ToFloat(hwy::bfloat16_t v) { return hwy::F32FromBF16(v); }

// One row's dot product: four accumulators over blocks of four vectors, the remaining whole
// vectors into the first, the four summed, then the scalar tail.
template <class D, class T>
HWY_INLINE float GemvRow(D d, const T* wr, const float* x, int64_t K) {
  const int64_t N = int64_t(hn::Lanes(d));
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  int64_t j = 0;
  for (; j + 4 * N <= K; j += 4 * N) {
    a0 = hn::MulAdd(LoadW(d, wr + j), hn::LoadU(d, x + j), a0);
    a1 = hn::MulAdd(LoadW(d, wr + j + N), hn::LoadU(d, x + j + N), a1);
    a2 = hn::MulAdd(LoadW(d, wr + j + 2 * N), hn::LoadU(d, x + j + 2 * N), a2);
    a3 = hn::MulAdd(LoadW(d, wr + j + 3 * N), hn::LoadU(d, x + j + 3 * N), a3);
  }
  for (; j + N <= K; j += N) a0 = hn::MulAdd(LoadW(d, wr + j), hn::LoadU(d, x + j), a0);
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
  for (; j < K; ++j) s += ToFloat(wr[j]) * x[j];
  return s;
}

// Row after row, in memory order: the weights are one sequential stream, which the hardware
// prefetchers follow best. Measured (session 21, AMD EPYC family 25 model 17, llama-27m F32
// decode, one thread): four rows side by side with a software prefetch 16 KiB ahead 99-104
// tokens/s, one row at a time with that prefetch 163-183, without it 209-223; with rows of
// 2 KiB (K = 512) four side-by-side rows are four short streams the prefetcher barely learns.
template <class T>
void GemvRowsT(const T* w, const float* x, int64_t n, int64_t K, float* y) {
  const hn::ScalableTag<float> d;
  for (int64_t r = 0; r < n; ++r) y[r] = GemvRow(d, w + r * K, x, K);
}
void GemvRowsImpl(const float* w, const float* x, int64_t n, int64_t K, float* y) {
  GemvRowsT(w, x, n, K, y);
}
void GemvRowsBf16Impl(const uint16_t* w, const float* x, int64_t n, int64_t K, float* y) {
  GemvRowsT(reinterpret_cast<const hwy::bfloat16_t*>(w), x, n, K, y);
}

double ExpShiftSumImpl(const float* x, float* out, int64_t n, float shift) {
  const hn::ScalableTag<float> d;
  const int64_t N = int64_t(hn::Lanes(d));
  constexpr int64_t kBlock = 256;
  const auto vshift = hn::Set(d, shift);
  double total = 0.0;
  int64_t i = 0;
  while (i + N <= n) {
    const int64_t end = std::min(n, i + kBlock);
    auto acc = hn::Zero(d);
    for (; i + N <= end; i += N) {
      const auto e = hn::Exp(d, hn::Sub(hn::LoadU(d, x + i), vshift));
      if (out) hn::StoreU(e, d, out + i);
      acc = hn::Add(acc, e);
    }
    total += double(hn::GetLane(hn::SumOfLanes(d, acc)));
  }
  for (; i < n; ++i) {
    const float e = std::exp(x[i] - shift);
    if (out) out[i] = e;
    total += double(e);
  }
  return total;
}

// out[j] = scale · <q, k_j> for n keys k_j = k + j · stride of d floats: four keys at a time
// (four independent sums), each key's products in the same order whatever the grouping.
template <int R, class D>
HWY_INLINE void DotKeys(D df, const float* q, const float* k, int64_t stride, int64_t d,
                        float scale, float* out) {
  const int64_t N = int64_t(hn::Lanes(df));
  hn::Vec<D> acc[R];
  for (int i = 0; i < R; ++i) acc[i] = hn::Zero(df);
  int64_t c = 0;
  for (; c + N <= d; c += N) {
    const auto qv = hn::LoadU(df, q + c);
    for (int i = 0; i < R; ++i) acc[i] = hn::MulAdd(qv, hn::LoadU(df, k + i * stride + c), acc[i]);
  }
  for (int i = 0; i < R; ++i) {
    float s = hn::GetLane(hn::SumOfLanes(df, acc[i]));
    for (int64_t t = c; t < d; ++t) s += q[t] * k[i * stride + t];
    out[i] = scale * s;
  }
}

void DotKeysImpl(const float* q, const float* k, int64_t stride, int64_t n, int64_t d, float scale,
                 float* out) {
  const hn::ScalableTag<float> df;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) DotKeys<4>(df, q, k + j * stride, stride, d, scale, out + j);
  for (; j < n; ++j) DotKeys<1>(df, q, k + j * stride, stride, d, scale, out + j);
}

// out[c] = Σ_j p[j] · v_j[c] over n rows v_j = v + j · stride of d floats, j in order: four
// vectors of columns at a time kept in registers over all the rows.
void WeightedRowsImpl(const float* p, const float* v, int64_t stride, int64_t n, int64_t d,
                      float* out) {
  const hn::ScalableTag<float> df;
  const int64_t N = int64_t(hn::Lanes(df));
  int64_t c = 0;
  for (; c + 4 * N <= d; c += 4 * N) {
    hn::Vec<decltype(df)> acc[4];
    for (auto& a : acc) a = hn::Zero(df);
    for (int64_t j = 0; j < n; ++j) {
      const auto pj = hn::Set(df, p[j]);
      for (int i = 0; i < 4; ++i)
        acc[i] = hn::MulAdd(pj, hn::LoadU(df, v + j * stride + c + i * N), acc[i]);
    }
    for (int i = 0; i < 4; ++i) hn::StoreU(acc[i], df, out + c + i * N);
  }
  for (; c + N <= d; c += N) {
    auto acc = hn::Zero(df);
    for (int64_t j = 0; j < n; ++j)
      acc = hn::MulAdd(hn::Set(df, p[j]), hn::LoadU(df, v + j * stride + c), acc);
    hn::StoreU(acc, df, out + c);
  }
  for (; c < d; ++c) {
    float acc = 0.0f;
    for (int64_t j = 0; j < n; ++j) acc += p[j] * v[j * stride + c];
    out[c] = acc;
  }
}

void SiluMulImpl(float* g, const float* u, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t N = int64_t(hn::Lanes(d));
  const auto one = hn::Set(d, 1.0f);
  int64_t i = 0;
  for (; i + N <= n; i += N) {
    const auto v = hn::LoadU(d, g + i);
    const auto den = hn::Add(one, hn::Exp(d, hn::Neg(v)));
    hn::StoreU(hn::Mul(hn::Div(v, den), hn::LoadU(d, u + i)), d, g + i);
  }
  for (; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

// |d|^p, 0 where d = 0 (Highway's Log is not defined at 0).
template <class D, class V>
V PowAbs(D d, V diff, bool square, V vp) {
  if (square) return hn::Mul(diff, diff);
  const auto nz = hn::Gt(diff, hn::Zero(d));
  const auto safe = hn::IfThenElse(nz, diff, hn::Set(d, 1.0f));
  return hn::IfThenElseZero(nz, hn::Exp(d, hn::Mul(vp, hn::Log(d, safe))));
}

float PowAbsScalar(float diff, float p) {
  return p == 2.0f ? diff * diff : (diff > 0.0f ? std::exp(p * std::log(diff)) : 0.0f);
}

// Σ w · |Q(x) − x|^p in float blocks of 256, double across; `round` maps a vector / scalar.
template <class VecRound, class ScalarRound>
double ErrorSum(const float* x, const float* w, int64_t n, float p, VecRound vround,
                ScalarRound sround) {
  const hn::ScalableTag<float> d;
  const int64_t N = int64_t(hn::Lanes(d));
  constexpr int64_t kBlock = 256;
  const bool square = p == 2.0f;
  const auto vp = hn::Set(d, p);
  double total = 0.0;
  int64_t i = 0;
  while (i + N <= n) {
    const int64_t end = std::min(n, i + kBlock);
    auto acc = hn::Zero(d);
    for (; i + N <= end; i += N) {
      const auto xv = hn::LoadU(d, x + i);
      auto e = PowAbs(d, hn::Abs(hn::Sub(vround(d, xv, i), xv)), square, vp);
      if (w) e = hn::Mul(e, hn::LoadU(d, w + i));
      acc = hn::Add(acc, e);
    }
    total += double(hn::GetLane(hn::SumOfLanes(d, acc)));
  }
  for (; i < n; ++i) {
    float e = PowAbsScalar(std::fabs(sround(x[i], i) - x[i]), p);
    if (w) e *= w[i];
    total += double(e);
  }
  return total;
}

double PowErrorSumImpl(const float* x, const float* q, const float* w, int64_t n, float p) {
  return ErrorSum(
      x, w, n, p, [q](auto d, auto, int64_t i) { return hn::LoadU(d, q + i); },
      [q](float, int64_t i) { return q[i]; });
}

double IntRoundErrorSumImpl(const float* x, const float* w, int64_t n, float scale, float zero,
                            float maxq, float p) {
  const hn::ScalableTag<float> d;
  const auto vs = hn::Set(d, scale), vz = hn::Set(d, zero), vmax = hn::Set(d, maxq);
  const auto vzero = hn::Zero(d);
  return ErrorSum(
      x, w, n, p,
      [&](auto dd, auto xv, int64_t) {
        auto c = hn::Add(hn::Round(hn::Div(xv, vs)), vz);  // Round: to nearest, ties to even
        c = hn::Min(hn::Max(c, vzero), vmax);
        (void)dd;
        return hn::Mul(vs, hn::Sub(c, vz));
      },
      [&](float v, int64_t) {
        float c = std::nearbyint(v / scale) + zero;
        c = c >= 0.0f ? c : 0.0f;
        c = c <= maxq ? c : maxq;
        return scale * (c - zero);
      });
}

}  // namespace qf::vec::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::vec {

HWY_EXPORT(MaxValueImpl);
HWY_EXPORT(GemvRowsImpl);
HWY_EXPORT(GemvRowsBf16Impl);
HWY_EXPORT(ExpShiftSumImpl);
HWY_EXPORT(SiluMulImpl);
HWY_EXPORT(DotKeysImpl);
HWY_EXPORT(WeightedRowsImpl);
HWY_EXPORT(PowErrorSumImpl);
HWY_EXPORT(IntRoundErrorSumImpl);

float MaxValue(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(MaxValueImpl)(x, n); }

void GemvRows(const float* w, const float* x, int64_t n, int64_t k, float* y) {
  HWY_DYNAMIC_DISPATCH(GemvRowsImpl)(w, x, n, k, y);
}
void GemvRowsBf16(const uint16_t* w, const float* x, int64_t n, int64_t k, float* y) {
  HWY_DYNAMIC_DISPATCH(GemvRowsBf16Impl)(w, x, n, k, y);
}
double ExpShiftSum(const float* x, float* out, int64_t n, float shift) {
  return HWY_DYNAMIC_DISPATCH(ExpShiftSumImpl)(x, out, n, shift);
}
void SiluMulVec(float* g, const float* u, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMulImpl)(g, u, n); }
void DotKeys(const float* q, const float* k, int64_t stride, int64_t n, int64_t d, float scale,
             float* out) {
  HWY_DYNAMIC_DISPATCH(DotKeysImpl)(q, k, stride, n, d, scale, out);
}
void WeightedRows(const float* p, const float* v, int64_t stride, int64_t n, int64_t d,
                  float* out) {
  HWY_DYNAMIC_DISPATCH(WeightedRowsImpl)(p, v, stride, n, d, out);
}
double PowErrorSum(const float* x, const float* q, const float* w, int64_t n, float p) {
  return HWY_DYNAMIC_DISPATCH(PowErrorSumImpl)(x, q, w, n, p);
}

double IntRoundErrorSum(const float* x, const float* w, int64_t n, float scale, float zero,
                        float maxq, float p) {
  return HWY_DYNAMIC_DISPATCH(IntRoundErrorSumImpl)(x, w, n, scale, zero, maxq, p);
}

double IntRoundErrorSumRef(const float* x, const float* w, int64_t n, float scale, float zero,
                           float maxq, float p) {
  std::vector<float> q(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    float c = std::nearbyint(x[i] / scale) + zero;
    c = std::min(std::max(c, 0.0f), maxq);
    q[i] = scale * (c - zero);
  }
  return PowErrorSumRef(x, q.data(), w, n, p);
}

double PowErrorSumRef(const float* x, const float* q, const float* w, int64_t n, float p) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double diff = std::fabs(double(q[i]) - x[i]);
    total += std::pow(diff, double(p)) * (w ? w[i] : 1.0f);
  }
  return total;
}

float MaxValueRef(const float* x, int64_t n) {
  float r = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < n; ++i) r = std::max(r, x[i]);
  return r;
}

double ExpShiftSumRef(const float* x, float* out, int64_t n, float shift) {
  double total = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = std::exp(x[i] - shift);
    if (out) out[i] = e;
    total += e;
  }
  return total;
}

void SiluMulRef(float* g, const float* u, int64_t n) {
  for (int64_t i = 0; i < n; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace qf::vec
#endif  // HWY_ONCE
