// The mix table and llama-quantize's per-tensor type rules (see gguf_mix.h), as plain
// functions of a tensor's name, shape and position in the model.
#include "formats/gguf_mix.h"

#include <cctype>

#include "formats/ggml_blocks.h"

namespace qf {
namespace {

constexpr GgufMix kMixes[] = {
    {"Q4_0", 2, "Q4_0", "4.5 bpw, 32-weight blocks, one fp16 scale"},
    {"Q4_1", 3, "Q4_1", "5.0 bpw, 32-weight blocks, fp16 scale and min"},
    {"Q8_0", 7, "Q8_0", "8.5 bpw, 32-weight blocks"},
    {"Q5_0", 8, "Q5_0", "5.5 bpw"},
    {"Q5_1", 9, "Q5_1", "6.0 bpw"},
    {"Q2_K", 10, "Q2_K", "k-quants 2-bit mix (attn_v/ffn_down/attn_output raised)"},
    {"Q3_K_S", 11, "Q3_K", "k-quants 3-bit, small"},
    {"Q3_K_M", 12, "Q3_K", "k-quants 3-bit mix, medium"},
    {"Q3_K_L", 13, "Q3_K", "k-quants 3-bit mix, large"},
    {"Q4_K_S", 14, "Q4_K", "k-quants 4-bit, small"},
    {"Q4_K_M", 15, "Q4_K", "k-quants 4-bit mix, medium (attn_v/ffn_down Q6_K on some layers)"},
    {"Q5_K_S", 16, "Q5_K", "k-quants 5-bit, small"},
    {"Q5_K_M", 17, "Q5_K", "k-quants 5-bit mix, medium"},
    {"Q6_K", 18, "Q6_K", "k-quants 6-bit"},
    {"IQ4_NL", 25, "IQ4_NL", "4.5 bpw non-linear grid, 32-weight blocks"},
    {"IQ4_XS", 30, "IQ4_XS", "4.25 bpw non-linear grid, 256-weight super-blocks"},
};

std::string Canonical(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = c == '-' ? '_' : char(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

bool Is(const GgufMix& m, std::string_view name) { return m.name == name; }

int64_t BlockOf(std::string_view type) {
  const GgmlBlockType* t = FindGgmlBlockType(type);
  return t ? t->block : 1;
}

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third between.
bool UseMoreBits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// llama_tensor_get_type_impl for the mixes of the table (dense models, no experts).
std::string RuleType(const GgufMix& mix, TensorCategory cat, int64_t cols, int64_t layer,
                     const MixContext& ctx) {
  std::string t(mix.base);
  const int64_t n = ctx.layers;
  if (cat == TensorCategory::kOutput ||
      (ctx.tied_embeddings && cat == TensorCategory::kTokenEmbd)) {
    if (ctx.output_type) return *ctx.output_type;
    if (cols % BlockOf(t) != 0) return "Q8_0";
    return t == "Q8_0" ? t : "Q6_K";
  }
  if (cat == TensorCategory::kTokenEmbd) return ctx.token_embd_type ? *ctx.token_embd_type : t;
  if (cat == TensorCategory::kAttnV || cat == TensorCategory::kAttnQkv) {
    const int64_t i = layer;  // llama.cpp counts attn_v tensors in file order: the layer
    if (Is(mix, "Q2_K")) return ctx.gqa >= 4 ? "Q4_K" : "Q3_K";
    if (Is(mix, "Q3_K_M")) return i < 2 ? "Q5_K" : "Q4_K";
    if (Is(mix, "Q3_K_L")) return "Q5_K";
    if ((Is(mix, "IQ4_NL") || Is(mix, "IQ4_XS")) && ctx.gqa >= 4) return "Q5_K";
    if ((Is(mix, "Q4_K_M") || Is(mix, "Q5_K_M")) && UseMoreBits(i, n)) return "Q6_K";
    if (Is(mix, "Q4_K_S") && i < 4) return "Q5_K";
    if (cat == TensorCategory::kAttnQkv) {
      if (Is(mix, "Q3_K_M") || Is(mix, "Q3_K_L")) return "Q4_K";
      if (Is(mix, "Q4_K_M")) return "Q5_K";
      if (Is(mix, "Q5_K_M")) return "Q6_K";
    }
    return t;
  }
  if (cat == TensorCategory::kFfnDown) {
    const int64_t i = layer;
    if (Is(mix, "Q2_K")) return "Q3_K";
    if (Is(mix, "Q3_K_M")) return i < n / 16 ? "Q5_K" : "Q4_K";  // non-Falcon: always ≥ Q4_K
    if (Is(mix, "Q3_K_L")) return "Q5_K";
    if (Is(mix, "Q4_K_M")) return UseMoreBits(i, n) ? "Q6_K" : t;
    if (i < n / 8 && (Is(mix, "IQ4_NL") || Is(mix, "IQ4_XS")) && !ctx.has_imatrix) return "Q5_K";
    if (Is(mix, "Q5_K_M") && UseMoreBits(i, n)) return "Q6_K";
    if (Is(mix, "Q4_K_S") && i < n / 8) return "Q5_K";
    if ((Is(mix, "Q4_0") || Is(mix, "Q5_0")) && ctx.has_imatrix && i < n / 8)
      return Is(mix, "Q4_0") ? "Q4_1" : "Q5_1";
    return t;
  }
  if (cat == TensorCategory::kAttnOutput) {
    if (Is(mix, "Q2_K")) return "Q3_K";
    if (Is(mix, "Q3_K_M")) return "Q4_K";
    if (Is(mix, "Q3_K_L")) return "Q5_K";
    return t;
  }
  return t;
}

// tensor_type_fallback: a 256-weight type whose block does not divide the row.
Result<TypeChoice> Fallback(std::string type, int64_t cols) {
  TypeChoice c{type, true, ""};
  const GgmlBlockType* bt = FindGgmlBlockType(type);
  if (!bt) return c;  // F16 / F32 / BF16
  if (cols % bt->block == 0) return c;
  std::string to;
  if (type == "IQ4_XS")
    to = "IQ4_NL";
  else if (type == "Q2_K" || type == "Q3_K")
    to = "Q4_0";
  else if (type == "Q4_K")
    to = "Q5_0";
  else if (type == "Q5_K")
    to = "Q5_1";
  else if (type == "Q6_K")
    to = "Q8_0";
  else
    return Err("no fallback for {} with rows of {} weights", type, cols);
  if (cols % FindGgmlBlockType(to)->block != 0) to = "F16";
  c.fallback = type + ": row of " + std::to_string(cols) + " weights is not a multiple of " +
               std::to_string(bt->block) + "; using " + to;
  c.type = to;
  return c;
}

bool KnownType(std::string_view t) {
  if (t == "F32" || t == "F16" || t == "BF16") return true;
  const GgmlBlockType* bt = FindGgmlBlockType(t);
  return bt && !bt->activation_only;
}

}  // namespace

std::span<const GgufMix> GgufMixTable() { return kMixes; }

const GgufMix* FindGgufMix(std::string_view name) {
  const std::string c = Canonical(name);
  for (const GgufMix& m : kMixes)
    if (m.name == c) return &m;
  return nullptr;
}

TensorCategory CategoryOf(std::string_view n) {
  auto has = [&](std::string_view s) { return n.find(s) != std::string_view::npos; };
  if (n == "output.weight") return TensorCategory::kOutput;
  if (n == "token_embd.weight") return TensorCategory::kTokenEmbd;
  if (has("attn_qkv.weight")) return TensorCategory::kAttnQkv;
  if (has("attn_v.weight")) return TensorCategory::kAttnV;
  if (has("attn_k.weight")) return TensorCategory::kAttnK;
  if (has("attn_q.weight")) return TensorCategory::kAttnQ;
  if (has("attn_output.weight")) return TensorCategory::kAttnOutput;
  if (has("ffn_up")) return TensorCategory::kFfnUp;
  if (has("ffn_gate")) return TensorCategory::kFfnGate;
  if (has("ffn_down")) return TensorCategory::kFfnDown;
  return TensorCategory::kOther;
}

Result<std::pair<std::regex, std::string>> ParseTensorTypeOverride(std::string_view spec) {
  const size_t eq = spec.rfind('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == spec.size())
    return Err("--tensor-type '{}': expected REGEX=TYPE", spec);
  const std::string type = Canonical(spec.substr(eq + 1));
  if (!KnownType(type)) return Err("--tensor-type '{}': unknown type '{}'", spec, type);
  try {
    return std::pair{std::regex(std::string(spec.substr(0, eq))), type};
  } catch (const std::regex_error& e) {
    return Err("--tensor-type '{}': bad regular expression: {}", spec, e.what());
  }
}

Result<TypeChoice> ChooseGgufType(const GgufMix& mix, std::string_view name, int dims, int64_t cols,
                                  int64_t layer, const MixContext& ctx,
                                  std::string_view float_type) {
  // tensor_allows_quantization: 2-D "*weight" tensors that are not norms.
  const bool ends_weight = name.size() >= 6 && name.substr(name.size() - 6) == "weight";
  if (dims < 2 || !ends_weight || name.find("_norm.weight") != std::string_view::npos)
    return TypeChoice{std::string(float_type), false, ""};
  for (const auto* t : {&ctx.output_type, &ctx.token_embd_type})
    if (*t && !KnownType(**t)) return Err("unknown ggml type '{}'", **t);
  const TensorCategory cat = CategoryOf(name);
  // Explicit output / token-embedding types win over everything (llama_tensor_get_type).
  if (ctx.token_embd_type && cat == TensorCategory::kTokenEmbd)
    return Fallback(*ctx.token_embd_type, cols);
  if (ctx.output_type && cat == TensorCategory::kOutput) return Fallback(*ctx.output_type, cols);
  std::string type(mix.base);
  bool manual = false;
  const std::string n(name);
  for (const auto& [re, t] : ctx.overrides) {
    if (std::regex_search(n, re)) {
      type = t;
      manual = true;
      break;
    }
  }
  if (!manual && !ctx.pure) type = RuleType(mix, cat, cols, layer, ctx);
  return Fallback(type, cols);
}

}  // namespace qf
