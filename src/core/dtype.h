// Storage dtypes of tensors in files, one table row each, and scalar conversions to f32.
// Contract: conversions are exact (every f16/bf16/fp8 value is representable in f32).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string_view>

namespace qf {

enum class DType : uint8_t {
  kF32,
  kF16,
  kBF16,
  kF8E4M3,
  kF8E5M2,
  kI8,
  kI32,
  kU8,
  kF64,
  kI16,
  kI64
};

struct DTypeInfo {
  DType dtype;
  std::string_view safetensors_name;  // as in a safetensors header ("F32", "BF16", ...)
  size_t bytes;                       // bytes per element
  bool is_float;
};

const DTypeInfo& Info(DType t);
std::optional<DType> DTypeFromSafetensorsName(std::string_view name);
inline std::string_view Name(DType t) { return Info(t).safetensors_name; }

inline float F32FromBits(uint32_t bits) { return std::bit_cast<float>(bits); }
inline uint32_t BitsFromF32(float f) { return std::bit_cast<uint32_t>(f); }

// The empty asm keeps the shifted bits in a general register. Without it, Debian 12's
// g++ 12.2 at -O1/-O2 miscompiles `c ? BF16ToF32(uint16_t(BitsFromF32(v) >> 16)) : v`
// into `v` (the x86 splitter for `and 0xffff0000` on a value living in an SSE register
// loses the write); tests/dtype_test.cc guards it.
inline float BF16ToF32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
#if defined(__GNUC__) && !defined(__clang__)
  asm("" : "+r"(bits));
#endif
  return F32FromBits(bits);
}
float F16ToF32(uint16_t h);
float F8E4M3ToF32(uint8_t v);  // OCP E4M3FN: bias 7, no inf, S.1111.111 = NaN
float F8E5M2ToF32(uint8_t v);  // OCP E5M2: bias 15, IEEE-like inf/NaN

// Nearest f16 / bf16 bit patterns of x: round to nearest even, overflow to ±inf, NaN kept.
uint16_t F16BitsRne(float x);
uint16_t Bf16BitsRne(float x);
// Nearest value of `dtype` (F32, BF16 or F16; round to nearest even): what a float stored in
// that dtype reads back as (scales, folded norms).
float RoundScaleForStorage(float scale, DType dtype);

// Converts n elements of a float dtype at src to f32. Returns false for non-float dtypes.
bool ConvertToF32(DType t, const std::byte* src, size_t n, float* dst);
// Converts n f32 values to F32, F16 or BF16 bytes at dst (round to nearest even). Returns false
// for other dtypes.
bool ConvertFromF32(DType t, const float* src, size_t n, std::byte* dst);

}  // namespace qf
