// Whole-matrix round-to-nearest through a Grid: W[N, K] -> codes + parameters, and back.
// Contract: Dequantize(Quantize(W)) == QuantizeDequantize(W) bit for bit; one Grid::Fit per
// parameter set, then plain per-element loops (no virtual calls).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "core/result.h"
#include "formats/grid.h"
#include "formats/scheme.h"

namespace qf {

struct QuantizedTensor {
  QuantScheme scheme;          // the scheme applied (after any group -> channel fallback)
  std::string fallback;        // why `scheme` differs from the one asked for; empty if not
  int64_t rows = 0;            // N
  int64_t cols = 0;            // K
  std::vector<uint8_t> codes;  // [N, K]: unsigned 0..maxq for ints, raw fp8 bytes
  std::vector<float> scales;   // [N, K/G] group, [N] channel, [1] tensor
  std::vector<int32_t> zeros;  // shape of scales: 0..maxq, asymmetric ints only; else empty

  int64_t group_size() const { return ColumnsPerParam(scheme, cols); }  // G, or K
  int64_t groups() const { return cols / group_size(); }                // sets per row
  // Index into scales/zeros of the parameter set covering W[row, col].
  int64_t ParamIndex(int64_t row, int64_t col) const;
  // Parameters covering W[row, col].
  GroupParams Params(int64_t row, int64_t col) const;
  // Whether each row has parameter sets of its own (channel and group schemes; a per-tensor
  // scheme's one set covers every row), and the sets [p0, p1) of rows [r0, r1) (per-tensor: the
  // one set).
  bool RowsOwnParams() const { return scheme.granularity != Granularity::kTensor; }
  std::pair<int64_t, int64_t> ParamsOfRows(int64_t r0, int64_t r1) const {
    if (!RowsOwnParams()) return {0, 1};
    return {r0 * groups(), r1 * groups()};
  }
  // Calls f(p, c0, c1) for each parameter set p of row r and the columns [c0, c1) it covers,
  // in column order (per-channel and per-tensor: the whole row). The loops of methods that
  // touch every weight go set by set this way instead of calling ParamIndex per weight.
  template <class F>
  void ForEachParam(int64_t r, F&& f) const {
    const int64_t g = group_size();
    for (int64_t c0 = 0; c0 < cols; c0 += g) f(ParamIndex(r, c0), c0, c0 + g);
  }
};

// Rounds W[n, k] (row-major, w.size() == n * k) to `scheme`. Group schemes whose G does not
// divide k fall back to per-channel (see ResolveScheme; the reason is in `fallback`).
// options.importance, if given, has k entries.
Result<QuantizedTensor> Quantize(std::span<const float> w, int64_t n, int64_t k,
                                 const QuantScheme& scheme, const FitOptions& options = {});

// Checks shapes and code ranges (a QuantizedTensor may come from a file).
Status Validate(const QuantizedTensor& q);

// W'[N, K] = scale * (code - zero) per element (fp8: decoded byte * scale).
Result<std::vector<float>> Dequantize(const QuantizedTensor& q);

// Fake quantization: the fp32 values Quantize + Dequantize would give, without the codes.
struct FakeQuantized {
  std::vector<float> weights;  // [N, K]
  QuantScheme scheme;          // as QuantizedTensor::scheme
  std::string fallback;        // as QuantizedTensor::fallback
};
Result<FakeQuantized> QuantizeDequantize(std::span<const float> w, int64_t n, int64_t k,
                                         const QuantScheme& scheme, const FitOptions& options = {});

}  // namespace qf
