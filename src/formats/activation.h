// Activation quantization (the A in W8A8 / FP8): schemes as table rows, and the
// quantize-dequantize a linear applies to its input X[M, K] inside the forward pass.
// Contract: int8 is symmetric, codes clamp(rne(x / scale), -128, 127); fp8 is e4m3 with a
// saturating round-to-nearest-even cast of x / scale. Dynamic rows take one scale per token
// (row of X) at run time, absmax / qmax (qmax 127 or 448; an all-zero row gets scale 1, as
// vLLM's per-token kernels do); static rows take one calibrated scale per tensor.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "core/result.h"
#include "formats/scheme.h"

namespace qf {

struct ActScheme {
  std::string_view name;  // "int8-token", "int8-tensor", "fp8-e4m3-token", "fp8-e4m3-tensor"
  QuantKind kind;         // kInt (8 bits, symmetric) or kFp8E4M3
  bool dynamic;           // per token at run time; false: one static scale per tensor
  friend bool operator==(const ActScheme& a, const ActScheme& b) { return a.name == b.name; }
};

// Every activation row, in a fixed order.
std::span<const ActScheme> ActSchemeTable();
// "int8-token" | "int8-tensor" | "fp8-token" | "fp8-e4m3-token" | "fp8-tensor" |
// "fp8-e4m3-tensor" (case-insensitive; '_' and '-' alike); an Error naming the accepted ones.
Result<ActScheme> ParseActScheme(std::string_view spec);

// Largest code magnitude: 127 for int8, 448 for fp8 e4m3.
float ActQMax(const ActScheme& s);
// Scale for an observed absolute maximum: absmax / qmax; 1 when absmax is 0 or not finite, and
// when absmax / qmax underflows to 0 (a row that small quantizes to zeros either way).
float ActScaleFromAbsMax(const ActScheme& s, float absmax);

// The activation row of a preset (SchemePreset::act of formats/scheme.h): "W8A8" -> int8-token,
// "W8A8-static" -> int8-tensor, "FP8" -> fp8-e4m3-tensor, "FP8-dynamic" -> fp8-e4m3-token.
// nullopt for A16 presets ("W4A16", ...) and for specs that are not presets ("int8-channel").
// Lives here rather than in scheme.h, which activation.h includes.
Result<std::optional<ActScheme>> PresetActivations(std::string_view spec);

// What a Linear applies to its input: nothing, or one activation row (with its static scale).
struct ActQuant {
  std::optional<ActScheme> scheme;  // none: activations stay fp32
  float scale = 0.0f;               // static rows: the calibrated per-tensor scale (> 0)
  bool enabled() const { return scheme.has_value(); }
};

// out[M, K] = dequantize(quantize(x[M, K])); out may equal x (no other overlap). Plain
// reference, one element at a time in double-free fp32 exactly as the contract says:
//   int8: out = clamp(rne(x / scale), -128, 127) * scale
//   fp8:  out = F8E4M3Values()[EncodeF8E4M3(x / scale)] * scale
// with scale = ActScaleFromAbsMax(absmax of the row) for dynamic rows (NaNs do not count in the
// absmax), a.scale for static ones. A static ActQuant needs a finite a.scale > 0 (QF_CHECK).
void QuantizeActivationsRef(const ActQuant& a, const float* x, float* out, int64_t m, int64_t k);
// The same values bit for bit (NaN inputs: NaN out, payload unspecified), the fast path the
// forward pass calls: branch-free SIMD loops, rows in parallel when outside an OpenMP region.
void QuantizeActivations(const ActQuant& a, const float* x, float* out, int64_t m, int64_t k);

// The codes and scales of an int8 row's quantization (what QuantizeActivations multiplies back
// together), for integer GEMMs: q[r * ldq + c] = clamp(rne(x / scale), -128, 127) + 128 as an
// unsigned byte (the offset form kernels/cpu/int8_gemm.h takes), scales[r] = the row's scale.
// Returns false, q and scales unspecified, when some x is not finite (the caller then takes
// the float path). Only for int8 rows (QF_CHECK).
bool QuantizeActivationsU8(const ActQuant& a, const float* x, int64_t m, int64_t k, uint8_t* q,
                           int64_t ldq, float* scales);

// The same for an fp8 row: q[r * ldq + c] = the bf16 bits of the e4m3 value of x / scale (what
// QuantizeActivations multiplies back by the scale; exact in bf16, 4 significant bits),
// scales[r] = the row's scale. False when some x is not finite. Only for fp8 rows (QF_CHECK).
bool QuantizeActivationsBf16(const ActQuant& a, const float* x, int64_t m, int64_t k, uint16_t* q,
                             int64_t ldq, float* scales);

}  // namespace qf
