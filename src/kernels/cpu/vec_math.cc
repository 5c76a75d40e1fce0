// Highway implementations of vec_math.h, compiled once per SIMD target (foreach_target) and
// chosen at run time; must match the *Ref loops at the bottom of this file.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/vec_math.cc"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/vec_math.h"

HWY_BEFORE_NAMESPACE();
namespace qf::kernels::HWY_NAMESPACE {
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

}  // namespace qf::kernels::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace qf::kernels {

HWY_EXPORT(MaxValueImpl);
HWY_EXPORT(ExpShiftSumImpl);
HWY_EXPORT(SiluMulImpl);

float MaxValue(const float* x, int64_t n) { return HWY_DYNAMIC_DISPATCH(MaxValueImpl)(x, n); }
double ExpShiftSum(const float* x, float* out, int64_t n, float shift) {
  return HWY_DYNAMIC_DISPATCH(ExpShiftSumImpl)(x, out, n, shift);
}
void SiluMulVec(float* g, const float* u, int64_t n) { HWY_DYNAMIC_DISPATCH(SiluMulImpl)(g, u, n); }

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

}  // namespace qf::kernels
#endif  // HWY_ONCE
