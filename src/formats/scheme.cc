// Scheme table, presets and spec parser (plain lookups; nothing here is on a hot path).
// Contract: ParseScheme either returns a table row or a one-line Error naming the bad token.
#include "formats/scheme.h"

#include <array>
#include <cctype>
#include <charconv>
#include <vector>

namespace qf {
namespace {

constexpr QuantScheme kSchemes[] = {
    {"int2-tensor-sym", QuantKind::kInt, 2, true, Granularity::kTensor, 0},
    {"int2-tensor-asym", QuantKind::kInt, 2, false, Granularity::kTensor, 0},
    {"int2-channel-sym", QuantKind::kInt, 2, true, Granularity::kChannel, 0},
    {"int2-channel-asym", QuantKind::kInt, 2, false, Granularity::kChannel, 0},
    {"int2-g32-sym", QuantKind::kInt, 2, true, Granularity::kGroup, 32},
    {"int2-g32-asym", QuantKind::kInt, 2, false, Granularity::kGroup, 32},
    {"int2-g64-sym", QuantKind::kInt, 2, true, Granularity::kGroup, 64},
    {"int2-g64-asym", QuantKind::kInt, 2, false, Granularity::kGroup, 64},
    {"int2-g128-sym", QuantKind::kInt, 2, true, Granularity::kGroup, 128},
    {"int2-g128-asym", QuantKind::kInt, 2, false, Granularity::kGroup, 128},
    {"int3-tensor-sym", QuantKind::kInt, 3, true, Granularity::kTensor, 0},
    {"int3-tensor-asym", QuantKind::kInt, 3, false, Granularity::kTensor, 0},
    {"int3-channel-sym", QuantKind::kInt, 3, true, Granularity::kChannel, 0},
    {"int3-channel-asym", QuantKind::kInt, 3, false, Granularity::kChannel, 0},
    {"int3-g32-sym", QuantKind::kInt, 3, true, Granularity::kGroup, 32},
    {"int3-g32-asym", QuantKind::kInt, 3, false, Granularity::kGroup, 32},
    {"int3-g64-sym", QuantKind::kInt, 3, true, Granularity::kGroup, 64},
    {"int3-g64-asym", QuantKind::kInt, 3, false, Granularity::kGroup, 64},
    {"int3-g128-sym", QuantKind::kInt, 3, true, Granularity::kGroup, 128},
    {"int3-g128-asym", QuantKind::kInt, 3, false, Granularity::kGroup, 128},
    {"int4-tensor-sym", QuantKind::kInt, 4, true, Granularity::kTensor, 0},
    {"int4-tensor-asym", QuantKind::kInt, 4, false, Granularity::kTensor, 0},
    {"int4-channel-sym", QuantKind::kInt, 4, true, Granularity::kChannel, 0},
    {"int4-channel-asym", QuantKind::kInt, 4, false, Granularity::kChannel, 0},
    {"int4-g32-sym", QuantKind::kInt, 4, true, Granularity::kGroup, 32},
    {"int4-g32-asym", QuantKind::kInt, 4, false, Granularity::kGroup, 32},
    {"int4-g64-sym", QuantKind::kInt, 4, true, Granularity::kGroup, 64},
    {"int4-g64-asym", QuantKind::kInt, 4, false, Granularity::kGroup, 64},
    {"int4-g128-sym", QuantKind::kInt, 4, true, Granularity::kGroup, 128},
    {"int4-g128-asym", QuantKind::kInt, 4, false, Granularity::kGroup, 128},
    {"int8-tensor-sym", QuantKind::kInt, 8, true, Granularity::kTensor, 0},
    {"int8-tensor-asym", QuantKind::kInt, 8, false, Granularity::kTensor, 0},
    {"int8-channel-sym", QuantKind::kInt, 8, true, Granularity::kChannel, 0},
    {"int8-channel-asym", QuantKind::kInt, 8, false, Granularity::kChannel, 0},
    {"int8-g32-sym", QuantKind::kInt, 8, true, Granularity::kGroup, 32},
    {"int8-g32-asym", QuantKind::kInt, 8, false, Granularity::kGroup, 32},
    {"int8-g64-sym", QuantKind::kInt, 8, true, Granularity::kGroup, 64},
    {"int8-g64-asym", QuantKind::kInt, 8, false, Granularity::kGroup, 64},
    {"int8-g128-sym", QuantKind::kInt, 8, true, Granularity::kGroup, 128},
    {"int8-g128-asym", QuantKind::kInt, 8, false, Granularity::kGroup, 128},
    {"fp8-e4m3-tensor", QuantKind::kFp8E4M3, 8, true, Granularity::kTensor, 0},
    {"fp8-e4m3-channel", QuantKind::kFp8E4M3, 8, true, Granularity::kChannel, 0},
    {"fp8-e5m2-tensor", QuantKind::kFp8E5M2, 8, true, Granularity::kTensor, 0},
    {"fp8-e5m2-channel", QuantKind::kFp8E5M2, 8, true, Granularity::kChannel, 0},
};

// Weight rows and activation rows of llm-compressor's preset_name_to_scheme (compressed-tensors
// quantization/quant_scheme.py): W8A8 = int8 channel weights + dynamic per-token int8
// activations; FP8 = per-tensor weights + static per-tensor activations; FP8_DYNAMIC = channel
// weights + dynamic per-token activations. "W8A8-static" is SmoothQuant's O3 (per-tensor static).
constexpr SchemePreset kPresets[] = {
    {"W4A16", "int4-g128-sym", "int4 weights, groups of 128, symmetric; 16-bit activations", ""},
    {"W4A16-asym", "int4-g128-asym", "int4 weights, groups of 128, with zero points", ""},
    {"W3A16", "int3-g128-sym", "int3 weights, groups of 128, symmetric", ""},
    {"W2A16", "int2-g64-sym", "int2 weights, groups of 64, symmetric", ""},
    {"W8A16", "int8-channel-sym", "int8 weights, one scale per output row", ""},
    {"W8A8", "int8-channel-sym",
     "int8 weights, one scale per output row; int8 activations, one scale per token at run time",
     "int8-token"},
    {"W8A8-static", "int8-channel-sym",
     "int8 weights, one scale per output row; int8 activations, one calibrated scale per tensor",
     "int8-tensor"},
    {"FP8", "fp8-e4m3-tensor",
     "fp8 e4m3 weights and activations, one scale per tensor (activation scale calibrated)",
     "fp8-e4m3-tensor"},
    {"FP8-dynamic", "fp8-e4m3-channel",
     "fp8 e4m3 weights, one scale per output row; fp8 activations, one scale per token at run "
     "time",
     "fp8-e4m3-token"},
};

constexpr std::array<int, 4> kIntBits = {2, 3, 4, 8};
constexpr std::array<int, 3> kGroupSizes = {32, 64, 128};

std::string Normalized(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = c == '_' ? '-' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t pos = s.find(sep, start);
    parts.push_back(s.substr(start, pos == std::string_view::npos ? pos : pos - start));
    if (pos == std::string_view::npos) return parts;
    start = pos + 1;
  }
}

// Parses the decimal number after `prefix` in `token`; -1 if token is not prefix + digits.
int NumberAfter(std::string_view token, std::string_view prefix) {
  if (token.substr(0, prefix.size()) != prefix || token.size() == prefix.size()) return -1;
  int value = -1;
  const char* first = token.data() + prefix.size();
  const char* last = token.data() + token.size();
  const auto [ptr, ec] = std::from_chars(first, last, value);
  if (ec != std::errc() || ptr != last || value < 0) return -1;
  return value;
}

template <size_t N>
bool Contains(const std::array<int, N>& values, int v) {
  for (int x : values) {
    if (x == v) return true;
  }
  return false;
}

}  // namespace

std::span<const QuantScheme> SchemeTable() { return kSchemes; }

std::span<const SchemePreset> SchemePresets() { return kPresets; }

const SchemePreset* FindPreset(std::string_view spec) {
  const std::string norm = Normalized(spec);
  for (const SchemePreset& p : kPresets) {
    if (Normalized(p.name) == norm) return &p;
  }
  return nullptr;
}

Result<QuantScheme> FindScheme(QuantKind kind, int bits, bool symmetric, Granularity granularity,
                               int group_size) {
  if (kind == QuantKind::kInt && !Contains(kIntBits, bits)) {
    return Err("int{} is not supported (bits must be 2, 3, 4 or 8)", bits);
  }
  if (kind != QuantKind::kInt) {
    if (bits != 8) return Err("fp8 has 8 bits, not {}", bits);
    if (!symmetric) return Err("fp8 is symmetric (no zero point)");
    if (granularity == Granularity::kGroup) {
      return Err("fp8 takes a per-tensor or per-channel scale, not groups");
    }
  }
  if (granularity == Granularity::kGroup && !Contains(kGroupSizes, group_size)) {
    return Err("group size {} is not supported (32, 64 or 128)", group_size);
  }
  const int want_group = granularity == Granularity::kGroup ? group_size : 0;
  for (const QuantScheme& s : kSchemes) {
    if (s.kind == kind && s.bits == bits && s.symmetric == symmetric &&
        s.granularity == granularity && s.group_size == want_group) {
      return s;
    }
  }
  return Err("no scheme with these fields");  // unreachable while the table is complete
}

Result<QuantScheme> ParseScheme(std::string_view spec) {
  if (const SchemePreset* p = FindPreset(spec)) return ParseScheme(p->scheme);
  const std::string norm = Normalized(spec);
  if (norm.empty()) return Err("empty quantization scheme");
  const std::vector<std::string_view> tokens = Split(norm, '-');

  QuantKind kind = QuantKind::kInt;
  int bits = 8;
  size_t next = 1;
  if (tokens[0] == "fp8") {
    kind = QuantKind::kFp8E4M3;
    if (tokens.size() > 1 && (tokens[1] == "e4m3" || tokens[1] == "e5m2")) {
      kind = tokens[1] == "e4m3" ? QuantKind::kFp8E4M3 : QuantKind::kFp8E5M2;
      next = 2;
    }
  } else if (tokens[0].substr(0, 3) == "int") {
    bits = NumberAfter(tokens[0], "int");
    if (bits < 0) return Err("scheme '{}': '{}' is not int<bits>", spec, tokens[0]);
  } else {
    return Err("scheme '{}': expected int<bits>, fp8 or a preset (W4A16, W8A16, FP8, ...)", spec);
  }

  bool is_int = kind == QuantKind::kInt;
  bool symmetric = true;
  Granularity granularity = is_int ? Granularity::kGroup : Granularity::kTensor;
  int group_size = is_int ? 128 : 0;
  bool seen_sym = false, seen_granularity = false;
  for (size_t i = next; i < tokens.size(); ++i) {
    const std::string_view t = tokens[i];
    if (t == "sym" || t == "asym") {
      if (seen_sym) return Err("scheme '{}': symmetry given twice", spec);
      seen_sym = true;
      symmetric = t == "sym";
      continue;
    }
    if (seen_granularity && (t == "tensor" || t == "channel" || t.substr(0, 1) == "g")) {
      return Err("scheme '{}': granularity given twice", spec);
    }
    seen_granularity = true;
    if (t == "tensor") {
      granularity = Granularity::kTensor;
    } else if (t == "channel") {
      granularity = Granularity::kChannel;
    } else if (const int g = NumberAfter(t, "g"); g >= 0) {
      granularity = Granularity::kGroup;
      group_size = g;
    } else {
      return Err("scheme '{}': unknown token '{}' (want tensor, channel, g<size>, sym, asym)", spec,
                 t);
    }
  }
  auto row = FindScheme(kind, bits, symmetric, granularity, group_size);
  if (!row.ok()) return row.error().Context(fmt::format("scheme '{}'", spec));
  return row;
}

Result<ResolvedScheme> ResolveScheme(const QuantScheme& scheme, int64_t n, int64_t k) {
  if (n <= 0 || k <= 0) {
    return Err("cannot quantize a [{}, {}] tensor with {}", n, k, scheme.name);
  }
  ResolvedScheme out{scheme, ""};
  if (scheme.granularity == Granularity::kGroup && k % scheme.group_size != 0) {
    QF_ASSIGN(out.scheme,
              FindScheme(scheme.kind, scheme.bits, scheme.symmetric, Granularity::kChannel, 0));
    out.fallback = fmt::format("{}: K = {} is not a multiple of {}; using {}", scheme.name, k,
                               scheme.group_size, out.scheme.name);
  }
  return out;
}

}  // namespace qf
