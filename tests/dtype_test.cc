// Dtype table and conversions: every row is consistent; f16/bf16/fp8 decode exactly.
#include "core/dtype.h"

#include <gtest/gtest.h>

#include <cmath>

namespace qf {
namespace {

TEST(DType, TableRoundTripsNames) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16, DType::kF8E4M3, DType::kF8E5M2,
                  DType::kI8, DType::kI32, DType::kU8, DType::kF64, DType::kI16, DType::kI64}) {
    const auto back = DTypeFromSafetensorsName(Name(t));
    ASSERT_TRUE(back.has_value()) << Name(t);
    EXPECT_EQ(*back, t);
    EXPECT_GT(Info(t).bytes, 0u);
  }
  EXPECT_FALSE(DTypeFromSafetensorsName("F12").has_value());
}

TEST(DType, F16KnownValues) {
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0xc000), -2.0f);
  EXPECT_EQ(F16ToF32(0x7bff), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

TEST(DType, BF16IsTopHalfOfF32) {
  for (uint32_t h = 0; h < 65536; h += 7) {
    const float f = BF16ToF32(uint16_t(h));
    EXPECT_EQ(BitsFromF32(f) >> 16, h);
  }
}

// Regression: with memcpy-based bit casts GCC 12.2 compiled this truncation away.
__attribute__((noinline)) float TruncateToBF16If(float v, int which) {
  if (which == 2) return BF16ToF32(uint16_t(BitsFromF32(v) >> 16));
  return v;
}

TEST(DType, BF16TruncationSurvivesOptimisation) {
  volatile float in = -0.067242131f;
  EXPECT_EQ(BitsFromF32(TruncateToBF16If(in, 2)), 0xbd890000u);
  EXPECT_EQ(BitsFromF32(TruncateToBF16If(in, 1)), 0xbd89b63eu);
}

TEST(DType, F8E4M3Exhaustive) {
  // Every code: value = (-1)^s * 2^(e-7) * (1 + m/8), subnormal 2^-6 * m/8, 0x7f/0xff NaN.
  for (int v = 0; v < 256; ++v) {
    const int s = v >> 7, e = (v >> 3) & 15, m = v & 7;
    const float got = F8E4M3ToF32(uint8_t(v));
    if (e == 15 && m == 7) {
      EXPECT_TRUE(std::isnan(got)) << v;
      continue;
    }
    double mag = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
    EXPECT_EQ(got, float(s ? -mag : mag)) << v;
  }
  EXPECT_EQ(F8E4M3ToF32(0x7e), 448.0f);
}

TEST(DType, F8E5M2Exhaustive) {
  for (int v = 0; v < 256; ++v) {
    const int s = v >> 7, e = (v >> 2) & 31, m = v & 3;
    const float got = F8E5M2ToF32(uint8_t(v));
    if (e == 31) {
      EXPECT_TRUE(m ? std::isnan(got) : std::isinf(got)) << v;
      continue;
    }
    double mag = e == 0 ? std::ldexp(m / 4.0, -14) : std::ldexp(1.0 + m / 4.0, e - 15);
    EXPECT_EQ(got, float(s ? -mag : mag)) << v;
  }
  EXPECT_EQ(F8E5M2ToF32(0x7b), 57344.0f);
}

}  // namespace
}  // namespace qf
