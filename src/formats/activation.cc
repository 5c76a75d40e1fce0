// Activation rows, their parser, and the quantize-dequantize of a linear's input X[M, K].
// Contract: QuantizeActivations == QuantizeActivationsRef bit for bit for every non-NaN input
// (tests/activation_test.cc); the Ref loops are the definition (activation.h).
//
// The fast path rewrites both casts as branch-free float arithmetic so `omp simd` vectorizes them:
// - int8: rne(v) is (|v| + 2^23) - 2^23 with the sign copied back (copysign keeps -0 for small
//   negatives, as RoundHalfEven does). That is exact for |v| < 2^23; above, it stays >= 2^23 (inf
//   stays inf), which the clamp to [-128, 127] saturates just as it does RoundHalfEven(v).
// - fp8 e4m3: the value EncodeF8E4M3 + F8E4M3Values gives is n * 2^(e-3) with
//   e = max(floor(log2 |v|), -6) and n = rne(|v| / 2^(e-3)) <= 16 (fp8.h EncodeMagnitude); both
//   powers of two are built from the exponent bits. For |v| >= 448 (inf included) that product is
//   >= 448, so min(., 448) is the saturation; below 448 it is at most 448.
// Written as std::min / std::max selects (NaN passes through both), GCC 12 vectorizes the loops
// at -O2; ternaries on the clamped value made it give up ("control flow in loop").
#include "formats/activation.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <string>

#include "core/dtype.h"
#include "formats/fp8.h"

namespace qf {
namespace {

constexpr ActScheme kActSchemes[] = {
    {"int8-token", QuantKind::kInt, true},
    {"int8-tensor", QuantKind::kInt, false},
    {"fp8-e4m3-token", QuantKind::kFp8E4M3, true},
    {"fp8-e4m3-tensor", QuantKind::kFp8E4M3, false},
};

constexpr float kInt8Min = -128.0f;
constexpr float kInt8Max = 127.0f;
constexpr float kTwo23 = 8388608.0f;
// Rows run in parallel only above this many elements: below it the fork costs more than the work.
constexpr int64_t kParallelElements = int64_t{1} << 16;

std::string Normalized(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// Largest |x| of a row; NaNs are skipped (a comparison with NaN is false).
float RowAbsMaxRef(const float* x, int64_t k) {
  float m = 0.0f;
  for (int64_t c = 0; c < k; ++c) {
    const float a = std::fabs(x[c]);
    if (a > m) m = a;
  }
  return m;
}

float RowAbsMax(const float* x, int64_t k) {
  float m = 0.0f;
  // Each lane keeps its own maximum with the same NaN-skipping select; max is exact, so the
  // order in which lanes are combined does not change the result.
#pragma omp simd reduction(max : m)
  for (int64_t c = 0; c < k; ++c) {
    const float a = std::fabs(x[c]);
    m = a > m ? a : m;
  }
  return m;
}

float RowScale(const ActQuant& a, float absmax) {
  return a.scheme->dynamic ? ActScaleFromAbsMax(*a.scheme, absmax) : a.scale;
}

void CheckStatic(const ActQuant& a) {
  QF_CHECK(a.scheme->dynamic || (std::isfinite(a.scale) && a.scale > 0.0f),
           "static activation row {} needs a finite scale > 0, got {}", a.scheme->name, a.scale);
}

// The int8 level of v = x / s: clamp(rne(v), -128, 127) (see the file comment).
inline float Int8Level(float v) {
  const float r = std::copysign((std::fabs(v) + kTwo23) - kTwo23, v);
  return std::min(std::max(r, kInt8Min), kInt8Max);
}

// The e4m3 value of v = x / s: decode(encode(v)) (see the file comment).
inline float Fp8Level(float v) {
  constexpr int32_t kMinBiased = 127 - 6;  // e4m3 emin = -6; subnormals share its quantum
  const float a = std::fabs(v);
  // Biased exponent of a (0 for zero and f32 subnormals, 255 for inf/NaN), at least emin's.
  const int32_t eb = std::max(static_cast<int32_t>(BitsFromF32(a) >> 23), kMinBiased);
  const float inv_quantum = F32FromBits(static_cast<uint32_t>(257 - eb) << 23);  // 2^-(e-3)
  const float quantum = F32FromBits(static_cast<uint32_t>(eb - 3) << 23);        // 2^(e-3)
  const float r = ((a * inv_quantum + kTwo23) - kTwo23) * quantum;
  return std::copysign(std::min(r, kF8E4M3Max), v);
}

// One row, int8: out = clamp(rne(x / s), -128, 127) * s.
void Int8Row(const float* x, float* out, int64_t k, float s) {
#pragma omp simd
  for (int64_t c = 0; c < k; ++c) out[c] = Int8Level(x[c] / s) * s;
}

// One row, fp8 e4m3: out = decode(encode(x / s)) * s.
void Fp8Row(const float* x, float* out, int64_t k, float s) {
#pragma omp simd
  for (int64_t c = 0; c < k; ++c) out[c] = Fp8Level(x[c] / s) * s;
}

// row(xr, s, r) for every row r of x[m, k] with its scale s (stored in scales[r]) when the
// whole row is finite; false when some row is not (those rows are skipped).
template <class Row>
bool ForFiniteRows(const ActQuant& a, const float* x, int64_t m, int64_t k, float* scales,
                   Row&& row) {
  CheckStatic(a);
  const bool dynamic = a.scheme->dynamic;
  bool finite = true;
  const bool parallel = m > 1 && m * k >= kParallelElements && !omp_in_parallel();
#pragma omp parallel for if (parallel) schedule(static) reduction(&& : finite)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    bool row_finite = true;
#pragma omp simd reduction(&& : row_finite)
    for (int64_t c = 0; c < k; ++c) row_finite = row_finite && std::isfinite(xr[c]);
    finite = finite && row_finite;
    if (!row_finite) continue;
    scales[r] = RowScale(a, dynamic ? RowAbsMax(xr, k) : 0.0f);
    row(xr, scales[r], r);
  }
  return finite;
}

}  // namespace

std::span<const ActScheme> ActSchemeTable() { return kActSchemes; }

Result<ActScheme> ParseActScheme(std::string_view spec) {
  std::string norm = Normalized(spec);
  if (norm == "fp8-token") norm = "fp8-e4m3-token";
  if (norm == "fp8-tensor") norm = "fp8-e4m3-tensor";
  for (const ActScheme& s : kActSchemes) {
    if (s.name == norm) return s;
  }
  return Err(
      "activation scheme '{}': expected int8-token, int8-tensor, fp8-token (fp8-e4m3-token) or "
      "fp8-tensor (fp8-e4m3-tensor)",
      spec);
}

float ActQMax(const ActScheme& s) { return s.kind == QuantKind::kInt ? kInt8Max : kF8E4M3Max; }

float ActScaleFromAbsMax(const ActScheme& s, float absmax) {
  if (!(absmax > 0.0f) || !std::isfinite(absmax)) return 1.0f;
  const float scale = absmax / ActQMax(s);
  return scale > 0.0f ? scale : 1.0f;
}

Result<std::optional<ActScheme>> PresetActivations(std::string_view spec) {
  using Out = std::optional<ActScheme>;
  const SchemePreset* p = FindPreset(spec);
  if (!p || p->act.empty()) return Out();
  QF_ASSIGN(ActScheme s, ParseActScheme(p->act));
  return Out(s);
}

void QuantizeActivationsRef(const ActQuant& a, const float* x, float* out, int64_t m, int64_t k) {
  if (!a.enabled()) {
    if (out != x) std::copy(x, x + m * k, out);
    return;
  }
  CheckStatic(a);
  const bool is_int = a.scheme->kind == QuantKind::kInt;
  const std::array<float, 256>& fp8 = F8E4M3Values();
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    float* yr = out + r * k;
    const float s = RowScale(a, a.scheme->dynamic ? RowAbsMaxRef(xr, k) : 0.0f);
    for (int64_t c = 0; c < k; ++c) {
      const float v = xr[c] / s;
      yr[c] =
          is_int ? std::clamp(RoundHalfEven(v), kInt8Min, kInt8Max) * s : fp8[EncodeF8E4M3(v)] * s;
    }
  }
}

void QuantizeActivations(const ActQuant& a, const float* x, float* out, int64_t m, int64_t k) {
  if (!a.enabled()) {
    if (out != x) std::copy(x, x + m * k, out);
    return;
  }
  CheckStatic(a);
  const bool is_int = a.scheme->kind == QuantKind::kInt;
  const bool dynamic = a.scheme->dynamic;
  const bool parallel = m > 1 && m * k >= kParallelElements && !omp_in_parallel();
#pragma omp parallel for if (parallel) schedule(static)
  for (int64_t r = 0; r < m; ++r) {
    const float* xr = x + r * k;
    float* yr = out + r * k;
    const float s = RowScale(a, dynamic ? RowAbsMax(xr, k) : 0.0f);
    if (is_int) {
      Int8Row(xr, yr, k, s);
    } else {
      Fp8Row(xr, yr, k, s);
    }
  }
}

bool QuantizeActivationsU8(const ActQuant& a, const float* x, int64_t m, int64_t k, uint8_t* q,
                           int64_t ldq, float* scales) {
  QF_CHECK(a.enabled() && a.scheme->kind == QuantKind::kInt, "QuantizeActivationsU8: not int8");
  return ForFiniteRows(a, x, m, k, scales, [&](const float* xr, float s, int64_t r) {
    uint8_t* qr = q + r * ldq;
#pragma omp simd
    for (int64_t c = 0; c < k; ++c) qr[c] = uint8_t(int(Int8Level(xr[c] / s)) + 128);
  });
}

bool QuantizeActivationsBf16(const ActQuant& a, const float* x, int64_t m, int64_t k, uint16_t* q,
                             int64_t ldq, float* scales) {
  QF_CHECK(a.enabled() && a.scheme->kind == QuantKind::kFp8E4M3,
           "QuantizeActivationsBf16: not an fp8 row");
  return ForFiniteRows(a, x, m, k, scales, [&](const float* xr, float s, int64_t r) {
    uint16_t* qr = q + r * ldq;
#pragma omp simd
    for (int64_t c = 0; c < k; ++c) qr[c] = uint16_t(BitsFromF32(Fp8Level(xr[c] / s)) >> 16);
  });
}

}  // namespace qf
