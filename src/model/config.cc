// config.json parsing and the family table (one row per architecture).
#include "model/config.h"

#include <array>
#include <nlohmann/json.hpp>
#include <tuple>

#include "core/mmap.h"

namespace qf::model {
namespace {

// Llama, Mistral, Qwen2 and Qwen3 checkpoints share the Hugging Face names below; a family
// with other names gets its own TensorNames row.
constexpr TensorNames kHfLlamaNames = {
    .embed = "model.embed_tokens.weight",
    .final_norm = "model.norm.weight",
    .lm_head = "lm_head.weight",
    .attn_norm = "model.layers.{}.input_layernorm.weight",
    .q = "model.layers.{}.self_attn.q_proj.weight",
    .k = "model.layers.{}.self_attn.k_proj.weight",
    .v = "model.layers.{}.self_attn.v_proj.weight",
    .o = "model.layers.{}.self_attn.o_proj.weight",
    .q_bias = "model.layers.{}.self_attn.q_proj.bias",
    .k_bias = "model.layers.{}.self_attn.k_proj.bias",
    .v_bias = "model.layers.{}.self_attn.v_proj.bias",
    .q_norm = "model.layers.{}.self_attn.q_norm.weight",
    .k_norm = "model.layers.{}.self_attn.k_norm.weight",
    .ffn_norm = "model.layers.{}.post_attention_layernorm.weight",
    .gate = "model.layers.{}.mlp.gate_proj.weight",
    .up = "model.layers.{}.mlp.up_proj.weight",
    .down = "model.layers.{}.mlp.down_proj.weight",
};

// llama.cpp's names (llama-arch.cpp LLM_TENSOR_NAMES), the same for "llama", "qwen2", "qwen3".
constexpr TensorNames kGgufNames = {
    .embed = "token_embd.weight",
    .final_norm = "output_norm.weight",
    .lm_head = "output.weight",
    .attn_norm = "blk.{}.attn_norm.weight",
    .q = "blk.{}.attn_q.weight",
    .k = "blk.{}.attn_k.weight",
    .v = "blk.{}.attn_v.weight",
    .o = "blk.{}.attn_output.weight",
    .q_bias = "blk.{}.attn_q.bias",
    .k_bias = "blk.{}.attn_k.bias",
    .v_bias = "blk.{}.attn_v.bias",
    .q_norm = "blk.{}.attn_q_norm.weight",
    .k_norm = "blk.{}.attn_k_norm.weight",
    .ffn_norm = "blk.{}.ffn_norm.weight",
    .gate = "blk.{}.ffn_gate.weight",
    .up = "blk.{}.ffn_up.weight",
    .down = "blk.{}.ffn_down.weight",
};

constexpr std::array<FamilyInfo, 4> kFamilies = {{
    {.architecture = "LlamaForCausalLM",
     .name = "llama",
     .qkv_bias = false,
     .qk_norm = false,
     .names = &kHfLlamaNames,
     .gguf_arch = "llama",
     .window_always = false,
     .gguf_llama_layout = true},
    {.architecture = "MistralForCausalLM",
     .name = "mistral",
     .qkv_bias = false,
     .qk_norm = false,
     .names = &kHfLlamaNames,
     .gguf_arch = "llama",
     .window_always = true,
     .gguf_llama_layout = true},
    {.architecture = "Qwen2ForCausalLM",
     .name = "qwen2",
     .qkv_bias = true,
     .qk_norm = false,
     .names = &kHfLlamaNames,
     .gguf_arch = "qwen2",
     .window_always = false,
     .gguf_llama_layout = false},
    {.architecture = "Qwen3ForCausalLM",
     .name = "qwen3",
     .qkv_bias = false,
     .qk_norm = true,
     .names = &kHfLlamaNames,
     .gguf_arch = "qwen3",
     .window_always = false,
     .gguf_llama_layout = false},
}};

using Json = nlohmann::json;

// Reads an optional integer field; errors when present with the wrong type or negative.
Result<int64_t> GetInt(const Json& j, const char* key, int64_t fallback, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer()) return Err("{}: field '{}' must be an integer", src, key);
  const int64_t v = it->get<int64_t>();
  if (v < 0) return Err("{}: field '{}' must be non-negative, got {}", src, key, v);
  return v;
}

Result<double> GetNumber(const Json& j, const char* key, double fallback, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) return Err("{}: field '{}' must be a number", src, key);
  return it->get<double>();
}

Result<int64_t> RequireInt(const Json& j, const char* key, const std::string& src) {
  if (!j.contains(key) || j[key].is_null()) return Err("{}: missing field '{}'", src, key);
  QF_ASSIGN(int64_t v, GetInt(j, key, 0, src));
  if (v == 0) return Err("{}: field '{}' must be positive", src, key);
  return v;
}

// bos/eos may be an int or a list of ints (Llama-3 lists several eos ids; the first is used).
int64_t FirstId(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) return -1;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer())
    return (*it)[0].get<int64_t>();
  return -1;
}

Result<RopeScaling> ParseRopeScaling(const Json& j, const std::string& src) {
  RopeScaling rs;
  auto it = j.find("rope_scaling");
  if (it == j.end() || it->is_null()) return rs;
  if (!it->is_object()) return Err("{}: 'rope_scaling' must be an object", src);
  std::string type = it->value("rope_type", it->value("type", std::string("default")));
  QF_ASSIGN(rs.factor, GetNumber(*it, "factor", 1.0, src));
  if (type == "default") return RopeScaling{};
  if (!(rs.factor >= 1.0)) return Err("{}: rope_scaling.factor must be >= 1", src);
  if (type == "linear") {
    rs.type = RopeScaling::Type::kLinear;
  } else if (type == "llama3") {
    rs.type = RopeScaling::Type::kLlama3;
    QF_ASSIGN(rs.low_freq_factor, GetNumber(*it, "low_freq_factor", 1.0, src));
    QF_ASSIGN(rs.high_freq_factor, GetNumber(*it, "high_freq_factor", 4.0, src));
    QF_ASSIGN(rs.original_max_position, GetInt(*it, "original_max_position_embeddings", 8192, src));
    if (!(rs.high_freq_factor > rs.low_freq_factor) || rs.original_max_position <= 0)
      return Err("{}: rope_scaling llama3 needs high_freq_factor > low_freq_factor", src);
  } else {
    return Err("{}: unsupported rope_scaling type '{}' (supported: default, linear, llama3)", src,
               type);
  }
  return rs;
}

}  // namespace

std::span<const FamilyInfo> FamilyTable() { return kFamilies; }

const FamilyInfo* FindFamily(std::string_view architecture) {
  for (const auto& f : kFamilies) {
    if (f.architecture == architecture) return &f;
  }
  return nullptr;
}

std::string SupportedArchitectures() {
  std::string s;
  for (const auto& f : kFamilies) {
    if (!s.empty()) s += ", ";
    s += f.architecture;
  }
  return s;
}

const FamilyInfo* FindFamilyByGgufArch(std::string_view gguf_arch) {
  for (const auto& f : kFamilies) {
    if (f.gguf_arch == gguf_arch) return &f;
  }
  return nullptr;
}

std::string SupportedGgufArchitectures() {
  std::string s;
  for (const auto& f : kFamilies) {
    if (s.find(f.gguf_arch) != std::string::npos) continue;
    if (!s.empty()) s += ", ";
    s += f.gguf_arch;
  }
  return s;
}

const TensorNames& GgufTensorNames() { return kGgufNames; }

std::string LayerTensorName(const char* pattern, int64_t layer) {
  std::string s(pattern);
  const auto pos = s.find("{}");
  if (pos != std::string::npos) s.replace(pos, 2, std::to_string(layer));
  return s;
}

Status CheckDimensions(const ModelConfig& c, const std::string& src) {
  constexpr int64_t kMaxDim = int64_t(1) << 24, kMaxCount = int64_t(1) << 16;
  for (const auto& [name, v, max] : {std::tuple{"vocab size", c.vocab_size, kMaxDim},
                                     std::tuple{"hidden size", c.hidden, kMaxDim},
                                     std::tuple{"intermediate size", c.intermediate, kMaxDim},
                                     std::tuple{"head size", c.head_dim, kMaxDim},
                                     std::tuple{"context length", c.max_position, kMaxDim * 64},
                                     std::tuple{"layer count", c.layers, kMaxCount},
                                     std::tuple{"attention head count", c.heads, kMaxCount},
                                     std::tuple{"KV head count", c.kv_heads, kMaxCount}})
    if (v > max) return Err("{}: {} {} is larger than qforge supports ({})", src, name, v, max);
  return Status::Ok();
}

namespace {
Result<ModelConfig> ParseHfConfigImpl(std::string_view json_text, const std::string& src) {
  Json j = Json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Err("{}: not valid JSON", src);
  if (!j.is_object()) return Err("{}: expected a JSON object", src);

  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string())
    return Err("{}: missing 'architectures' list", src);
  const std::string arch_name = (*arch)[0].get<std::string>();
  c.family = FindFamily(arch_name);
  if (!c.family)
    return Err("{}: unsupported architecture '{}' (supported: {})", src, arch_name,
               SupportedArchitectures());

  QF_ASSIGN(c.vocab_size, RequireInt(j, "vocab_size", src));
  QF_ASSIGN(c.hidden, RequireInt(j, "hidden_size", src));
  QF_ASSIGN(c.intermediate, RequireInt(j, "intermediate_size", src));
  QF_ASSIGN(c.layers, RequireInt(j, "num_hidden_layers", src));
  QF_ASSIGN(c.heads, RequireInt(j, "num_attention_heads", src));
  QF_ASSIGN(c.kv_heads, GetInt(j, "num_key_value_heads", c.heads, src));
  if (c.kv_heads == 0 || c.heads % c.kv_heads != 0)
    return Err("{}: num_attention_heads {} is not a multiple of num_key_value_heads {}", src,
               c.heads, c.kv_heads);
  QF_ASSIGN(c.head_dim, GetInt(j, "head_dim", 0, src));
  if (c.head_dim == 0) {
    if (c.hidden % c.heads != 0)
      return Err("{}: hidden_size {} not divisible by num_attention_heads {} and no head_dim", src,
                 c.hidden, c.heads);
    c.head_dim = c.hidden / c.heads;
  }
  if (c.head_dim % 2 != 0) return Err("{}: head_dim {} must be even for RoPE", src, c.head_dim);
  QF_ASSIGN(c.max_position, GetInt(j, "max_position_embeddings", 2048, src));
  if (c.max_position == 0) return Err("{}: max_position_embeddings must be positive", src);
  QF_TRY(CheckDimensions(c, src));
  QF_ASSIGN(c.rms_eps, GetNumber(j, "rms_norm_eps", 1e-6, src));
  QF_ASSIGN(c.rope_theta, GetNumber(j, "rope_theta", 10000.0, src));
  if (!(c.rms_eps > 0) || !(c.rope_theta > 0))
    return Err("{}: rms_norm_eps and rope_theta must be positive", src);
  QF_ASSIGN(c.rope_scaling, ParseRopeScaling(j, src));
  if (j.contains("hidden_act") && j["hidden_act"] != "silu")
    return Err("{}: unsupported hidden_act {} (expected \"silu\")", src, j["hidden_act"].dump());

  auto tie = j.find("tie_word_embeddings");
  c.tie_embeddings = tie != j.end() && tie->is_boolean() && tie->get<bool>();
  auto bias = j.find("attention_bias");
  c.qkv_bias = c.family->qkv_bias || (bias != j.end() && bias->is_boolean() && bias->get<bool>());

  // Sliding-window attention: Mistral when set; Qwen2/3 only with use_sliding_window.
  QF_ASSIGN(int64_t window, GetInt(j, "sliding_window", 0, src));
  const bool use_window = c.family->window_always || j.value("use_sliding_window", false);
  c.sliding_window = use_window ? window : 0;

  c.bos_id = FirstId(j, "bos_token_id");
  c.eos_id = FirstId(j, "eos_token_id");
  if (j.contains("torch_dtype") && j["torch_dtype"].is_string())
    c.torch_dtype = j["torch_dtype"].get<std::string>();
  return c;
}
}  // namespace

Result<ModelConfig> ParseHfConfig(std::string_view json_text, const std::string& src) {
  try {
    return ParseHfConfigImpl(json_text, src);
  } catch (const nlohmann::json::exception& e) {  // a field of an unexpected JSON type
    return Err("{}: {}", src, e.what());
  }
}

Result<ModelConfig> LoadHfConfig(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  QF_ASSIGN(std::string text, ReadTextFile(path));
  return ParseHfConfig(text, path.string());
}

Status CheckUnquantized(const std::filesystem::path& model_dir, std::string_view what) {
  const auto path = model_dir / "config.json";
  const Result<std::string> text = ReadTextFile(path);
  if (!text.ok()) return Status::Ok();
  const nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("quantization_config")) return Status::Ok();
  const nlohmann::json& q = j["quantization_config"];
  const std::string method =
      q.is_object() && q.contains("quant_method") && q["quant_method"].is_string()
          ? q["quant_method"].get<std::string>()
          : "unknown";
  return Err("{}: a quantized checkpoint (quant_method '{}'); {} takes unquantized weights",
             path.string(), method, what);
}

}  // namespace qf::model
