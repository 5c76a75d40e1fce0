// The grid a method rounds to: fit (scale, zero) over a block of W, round one value given them.
// Contract: integer fit/round reproduce IST-DASLab/gptq quant.py (Quantizer.find_params and
// quantize()) in fp32, bit for bit; FP8 follows compressed-tensors (scale = amax / fmax, then a
// saturating round-to-nearest-even cast).
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "formats/fp8.h"
#include "formats/scheme.h"

namespace qf {

// Parameters of one parameter set: w ~= scale * (code - zero).
struct GroupParams {
  float scale = 1.0f;
  float zero = 0.0f;  // code units, integer-valued: 2^(bits-1) for symmetric ints, 0 for fp8
};

// Clipping search: try shrinking the fitted range by p = 1 - i / grid for
// i = 0 .. int(max_shrink * grid) - 1 (both ends of the range scaled by p, zero refitted for
// asymmetric ints) and keep the first p with the least sum over the block of
// importance[col] * |Round(x) - x|^norm. i = 0 is plain min-max, so the search never
// increases that error. This is GPTQ quant.py's `mse` option; its settings are Gptq().
struct ClipSearch {
  int grid = 20;
  double max_shrink = 0.2;  // double so that int(max_shrink * grid) matches Python
  float norm = 2.0f;        // error exponent; 2 = squared error

  static constexpr ClipSearch Rtn() { return {20, 0.2, 2.0f}; }    // qforge RTN --clip
  static constexpr ClipSearch Gptq() { return {100, 0.8, 2.4f}; }  // quant.py mse=True
  static constexpr ClipSearch Awq() { return {20, 0.5, 2.0f}; }    // AWQ's grid and shrink
};

struct FitOptions {
  std::optional<ClipSearch> clip;     // none: plain min-max (the GPTQ default)
  std::span<const float> importance;  // [ld] weight per input column for the clip error;
                                      // indexed by absolute column; empty: all 1
};

// Value type with no virtual calls: methods hold one per tensor and call Round per element.
class Grid {
 public:
  explicit Grid(const QuantScheme& scheme);

  const QuantScheme& scheme() const { return scheme_; }

  // Code of x: unsigned 0..maxq for ints, the raw fp8 byte for fp8.
  uint8_t Encode(float x, GroupParams p) const {
    if (is_int_) return static_cast<uint8_t>(IntCode(x, p));
    return EncodeFp8(x / p.scale);
  }
  float Decode(uint8_t code, GroupParams p) const {
    if (is_int_) return p.scale * (static_cast<float>(code) - p.zero);
    return fp8_values_[code] * p.scale;
  }
  // Dequantized value of x: equal to Decode(Encode(x, p), p). What GPTQ needs per column.
  float Round(float x, GroupParams p) const {
    if (is_int_) return p.scale * (IntCode(x, p) - p.zero);
    return fp8_values_[EncodeFp8(x / p.scale)] * p.scale;
  }

  // Round / Encode over a contiguous run sharing one parameter set: the whole-matrix paths
  // (branch on the kind hoisted out); same values as the scalar calls.
  void RoundSpan(const float* x, float* out, int64_t n, GroupParams p) const;
  void EncodeSpan(const float* x, uint8_t* out, int64_t n, GroupParams p) const;

  // Parameters for a raw range [xmin, xmax] of a block (quant.py find_params, no mse):
  // ints: xmin = min(xmin, 0), xmax = max(xmax, 0); sym: xmax = max(|xmin|, xmax) and
  // xmin = -xmax if xmin < 0; both 0: [-1, 1]; scale = (xmax - xmin) / maxq;
  // zero = sym ? (maxq + 1) / 2 : rne(-xmin / scale). fp8: scale = max(|xmin|, |xmax|) / fmax,
  // 1 when that is 0.
  GroupParams FitRange(float xmin, float xmax) const;

  // Fits parameters for rows [0, rows) over columns [c0, c1) of row-major w with leading
  // dimension ld, into out[rows]. kTensor schemes fit one set over the whole block and copy it
  // to every row; others fit each row on its own (the caller picks the columns: a group's
  // for kGroup, [0, K) for kChannel).
  void Fit(const float* w, int64_t rows, int64_t ld, int64_t c0, int64_t c1,
           std::span<GroupParams> out, const FitOptions& options = {}) const;

 private:
  // quant.py quantize(): clamp(round(x / scale) + zero, 0, maxq); NaN maps to 0.
  float IntCode(float x, GroupParams p) const {
    float q = RoundHalfEven(x / p.scale) + p.zero;
    q = q >= 0.0f ? q : 0.0f;
    return q <= maxq_ ? q : maxq_;
  }
  uint8_t EncodeFp8(float x) const { return e4m3_ ? EncodeF8E4M3(x) : EncodeF8E5M2(x); }
  // Range after quant.py's normalisation (min/max with 0, symmetry, empty range).
  void NormalizeRange(float* xmin, float* xmax) const;
  GroupParams ParamsFromNormalized(float xmin, float xmax) const;

  QuantScheme scheme_;
  bool is_int_;
  bool e4m3_;
  float maxq_;               // 2^bits - 1 for ints
  float fmax_;               // 448 or 57344 for fp8
  const float* fp8_values_;  // [256] decode table of the fp8 kind
};

}  // namespace qf
