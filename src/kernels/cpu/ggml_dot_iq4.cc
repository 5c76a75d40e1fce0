// Highway kernels of ggml's non-uniform 4-bit blocks (IQ4_NL, IQ4_XS: codes index the grid
// kValuesIq4nl), compiled once per SIMD target (foreach_target).
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

struct BIQ4_NL {  // x = d * grid[q]
  using Block = ggml::BlockIQ4_NL;
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
std::vector<Unit> NoInterleavedLayout(int) { return {}; }

}  // namespace

const Family kIQ4Kernels{DecodeRows, Gemv, NoInterleavedLayout, DecodeLevels};

}  // namespace ggml_dot
}  // namespace qf::kernels
#endif  // HWY_ONCE
