// Dtype table and exact scalar conversions to f32 (reference loops; used at load time).
#include "core/dtype.h"

#include <array>
#include <cmath>
#include <cstring>

namespace qf {
namespace {

constexpr std::array<DTypeInfo, 11> kDTypes = {{
    {DType::kF32, "F32", 4, true},
    {DType::kF16, "F16", 2, true},
    {DType::kBF16, "BF16", 2, true},
    {DType::kF8E4M3, "F8_E4M3", 1, true},
    {DType::kF8E5M2, "F8_E5M2", 1, true},
    {DType::kI8, "I8", 1, false},
    {DType::kI32, "I32", 4, false},
    {DType::kU8, "U8", 1, false},
    {DType::kF64, "F64", 8, true},
    {DType::kI16, "I16", 2, false},
    {DType::kI64, "I64", 8, false},
}};

}  // namespace

const DTypeInfo& Info(DType t) {
  for (const auto& row : kDTypes) {
    if (row.dtype == t) return row;
  }
  return kDTypes[0];  // unreachable: every enumerator has a row (checked by tests)
}

std::optional<DType> DTypeFromSafetensorsName(std::string_view name) {
  for (const auto& row : kDTypes) {
    if (row.safetensors_name == name) return row.dtype;
  }
  return std::nullopt;
}

float F16ToF32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  const uint32_t mant = h & 0x3ff;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float v = std::ldexp(float(mant), -24);
    return sign ? -v : v;
  }
  if (exp == 31) return F32FromBits(sign | 0x7f800000u | (mant << 13));
  return F32FromBits(sign | ((exp + 112) << 23) | (mant << 13));
}

float F8E4M3ToF32(uint8_t v) {
  const bool neg = v & 0x80;
  const int exp = (v >> 3) & 0xf;
  const int mant = v & 0x7;
  if (exp == 0xf && mant == 0x7) return neg ? -NAN : NAN;
  const float mag = exp == 0 ? std::ldexp(float(mant), -9)  // subnormal: m/8 * 2^-6
                             : std::ldexp(1.0f + mant / 8.0f, exp - 7);
  return neg ? -mag : mag;
}

float F8E5M2ToF32(uint8_t v) {
  // E5M2 is the top byte of an IEEE f16.
  return F16ToF32(uint16_t(v) << 8);
}

bool ConvertToF32(DType t, const std::byte* src, size_t n, float* dst) {
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return true;
    case DType::kF64:
      for (size_t i = 0; i < n; ++i) {
        double d;
        std::memcpy(&d, src + 8 * i, 8);
        dst[i] = float(d);
      }
      return true;
    case DType::kBF16:
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = t == DType::kBF16 ? BF16ToF32(h) : F16ToF32(h);
      }
      return true;
    case DType::kF8E4M3:
      for (size_t i = 0; i < n; ++i) dst[i] = F8E4M3ToF32(uint8_t(src[i]));
      return true;
    case DType::kF8E5M2:
      for (size_t i = 0; i < n; ++i) dst[i] = F8E5M2ToF32(uint8_t(src[i]));
      return true;
    default:
      return false;
  }
}

uint16_t F16BitsRne(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const float a = std::fabs(x);
  if (std::isnan(a)) return sign | 0x7e00;
  if (a >= 65520.0f) return sign | 0x7c00;  // rounds to infinity
  int e = int(BitsFromF32(a) >> 23) - 127;  // floor(log2 a); f32 subnormals clamp below
  if (e < -14) e = -14;
  // Exact: scaling by a power of two; nearbyint rounds half to even in the default mode.
  const float n = std::nearbyint(std::ldexp(a, 10 - e));
  return sign | uint16_t((uint32_t(e + 14) << 10) + uint32_t(n));
}

uint16_t Bf16BitsRne(float x) {
  uint32_t b = BitsFromF32(x);
  if (std::isnan(x)) return uint16_t((b >> 16) | 0x40);  // stay NaN (quiet)
  b += 0x7fffu + ((b >> 16) & 1u);
  return uint16_t(b >> 16);
}

bool ConvertFromF32(DType t, const float* src, size_t n, std::byte* dst) {
  switch (t) {
    case DType::kF32:
      std::memcpy(dst, src, n * 4);
      return true;
    case DType::kBF16:
    case DType::kF16:
      for (size_t i = 0; i < n; ++i) {
        const uint16_t h = t == DType::kBF16 ? Bf16BitsRne(src[i]) : F16BitsRne(src[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return true;
    default:
      return false;
  }
}

float RoundScaleForStorage(float scale, DType dtype) {
  if (dtype == DType::kBF16) return BF16ToF32(Bf16BitsRne(scale));
  if (dtype == DType::kF16) return F16ToF32(F16BitsRne(scale));
  return scale;
}

}  // namespace qf
