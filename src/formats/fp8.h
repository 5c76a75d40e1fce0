// OCP FP8 encoders (f32 -> E4M3 / E5M2 byte): round to nearest even, saturating; plus decode
// tables. Contract: Decode(Encode(x)) is the nearest fp8 value (ties to even mantissa) for
// every finite |x| <= max, bit-exact with the OCP 8-bit float spec; larger finite values
// saturate to +-max.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "core/dtype.h"

namespace qf {

constexpr float kF8E4M3Max = 448.0f;    // S.1111.110
constexpr float kF8E5M2Max = 57344.0f;  // S.11110.11

// Rounds to the nearest integer, ties to even (torch.round, std::nearbyint in the default
// mode) without touching the floating-point environment: adding 2^23 leaves no fraction bits.
inline float RoundHalfEven(float x) {
  constexpr float kTwo23 = 8388608.0f;
  const float a = std::fabs(x);
  if (!(a < kTwo23)) return x;  // already integral, or inf/NaN
  return std::copysign((a + kTwo23) - kTwo23, x);
}

namespace fp8_internal {

// Magnitude bits of finite 0 <= a < max for a format with kMant mantissa bits and exponent
// bias kBias. With e = max(floor(log2 a), emin) and n = rne(a / 2^(e - kMant)), the code is
// ((e - emin) << kMant) + n: subnormals (e = emin, n < 2^kMant) and the carry n = 2^(kMant+1)
// into the next binade both fall out of the same sum.
template <int kMant, int kBias>
inline uint8_t EncodeMagnitude(float a) {
  constexpr int kEmin = 1 - kBias;
  int e = static_cast<int>(BitsFromF32(a) >> 23) - 127;
  if (e < kEmin) e = kEmin;
  // 1 / 2^(e - kMant) as a float; exact scaling, no rounding in the product.
  const float inv_quantum = F32FromBits(static_cast<uint32_t>(127 - (e - kMant)) << 23);
  const auto n = static_cast<uint32_t>(RoundHalfEven(a * inv_quantum));
  return static_cast<uint8_t>((static_cast<uint32_t>(e - kEmin) << kMant) + n);
}

}  // namespace fp8_internal

// E4M3 (no infinities): NaN -> 0x7f | sign; |x| >= 448 and +-inf -> +-448 (0x7e | sign).
inline uint8_t EncodeF8E4M3(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (std::isnan(a)) return sign | 0x7f;
  if (a >= kF8E4M3Max) return sign | 0x7e;
  return sign | fp8_internal::EncodeMagnitude<3, 7>(a);
}

// E5M2 (IEEE-like): NaN -> 0x7f | sign; +-inf -> 0x7c | sign; finite |x| >= 57344 -> +-57344.
inline uint8_t EncodeF8E5M2(float x) {
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  const float a = std::fabs(x);
  if (std::isnan(a)) return sign | 0x7f;
  if (std::isinf(a)) return sign | 0x7c;
  if (a >= kF8E5M2Max) return sign | 0x7b;
  return sign | fp8_internal::EncodeMagnitude<2, 15>(a);
}

// All 256 decoded values (F8E4M3ToF32 / F8E5M2ToF32 of dtype.h), for table lookups.
const std::array<float, 256>& F8E4M3Values();
const std::array<float, 256>& F8E5M2Values();

}  // namespace qf
