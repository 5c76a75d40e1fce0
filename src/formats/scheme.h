// Quantization schemes as table rows (uniform integers, FP8) and the spec parser the CLI uses.
// Contract: every QuantScheme handed out (table, parser, presets, ResolveScheme) is a table row.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/result.h"

namespace qf {

enum class QuantKind : uint8_t { kInt, kFp8E4M3, kFp8E5M2 };
enum class Granularity : uint8_t { kTensor, kChannel, kGroup };

// One row. Weights are W[N, K] row-major (N output rows, K input columns); a parameter set
// (scale, zero) covers the whole tensor [1], one output row [N], or G consecutive input
// columns of one row [N, K/G]. For an activation X[M, K], kChannel means per token (row).
struct QuantScheme {
  std::string_view name;  // canonical spec, e.g. "int4-g128-sym", "fp8-e4m3-tensor"
  QuantKind kind;
  int bits;        // 2, 3, 4 or 8 for ints; 8 for fp8
  bool symmetric;  // ints: zero fixed at 2^(bits-1); fp8 is always symmetric
  Granularity granularity;
  int group_size;  // G for kGroup; 0 otherwise

  bool is_int() const { return kind == QuantKind::kInt; }
  // Largest code: 2^bits - 1 for ints (codes are unsigned 0..maxq); 255 for fp8 raw bytes.
  int MaxCode() const { return is_int() ? (1 << bits) - 1 : 255; }
  friend bool operator==(const QuantScheme& a, const QuantScheme& b) { return a.name == b.name; }
};

// Every supported scheme, in a fixed order: int{2,3,4,8} x {tensor, channel, g32, g64, g128}
// x {sym, asym}, then fp8 {e4m3, e5m2} x {tensor, channel}.
std::span<const QuantScheme> SchemeTable();

// The table row with these fields, or an Error naming the invalid field.
Result<QuantScheme> FindScheme(QuantKind kind, int bits, bool symmetric, Granularity granularity,
                               int group_size);

// Named presets users know from llm-compressor ("W4A16", "W8A8", "FP8-dynamic", ...).
struct SchemePreset {
  std::string_view name;    // matched case-insensitively, '_' and '-' alike
  std::string_view scheme;  // canonical weight row name
  std::string_view what;    // one line for --help
  // Canonical activation row name (formats/activation.h: "int8-token", "fp8-e4m3-tensor", ...);
  // empty: activations stay 16-bit (A16). PresetActivations() (activation.h) parses it.
  std::string_view act;
};
std::span<const SchemePreset> SchemePresets();
// The preset named `spec` (same matching as ParseScheme), or nullptr for a plain spec.
const SchemePreset* FindPreset(std::string_view spec);

// Parses a preset name (giving its weight row) or a spec:
// "int<b>[-<tensor|channel|g<G>>][-<sym|asym>]" (defaults g128, sym) or
// "fp8[-<e4m3|e5m2>][-<tensor|channel>]" (defaults e4m3, tensor). Tokens after the first may
// come in any order. Case-insensitive.
Result<QuantScheme> ParseScheme(std::string_view spec);

// Columns covered by one parameter set of a row of W[N, k]: G for groups, k otherwise.
inline int64_t ColumnsPerParam(const QuantScheme& s, int64_t k) {
  return s.granularity == Granularity::kGroup ? s.group_size : k;
}

// The scheme actually applied to one W[n, k] tensor. A group scheme whose G does not divide k
// falls back to the per-channel row of the same kind/bits/symmetry; `fallback` then says so
// (one line for the CLI) and is empty otherwise.
struct ResolvedScheme {
  QuantScheme scheme;
  std::string fallback;
};
Result<ResolvedScheme> ResolveScheme(const QuantScheme& scheme, int64_t n, int64_t k);

}  // namespace qf
