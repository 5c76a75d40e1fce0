// Model configuration (from a Hugging Face config.json) and the per-family table:
// which architectures qforge runs, their optional parts, their tensor names and the GGUF
// architecture (llama.cpp's general.architecture) each one is stored as.
// Contract: ParseHfConfig validates every dimension and names the file and field on error.
// (GGUF metadata -> ModelConfig is model/gguf_model.h.)
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"

namespace qf::model {

// Tensor names of one decoder family, "{}" = layer index.
struct TensorNames {
  const char* embed;
  const char* final_norm;
  const char* lm_head;
  const char* attn_norm;
  const char *q, *k, *v, *o;
  const char *q_bias, *k_bias, *v_bias;
  const char *q_norm, *k_norm;  // per-head RMSNorm weights (Qwen3)
  const char* ffn_norm;
  const char *gate, *up, *down;
};

// One row per supported architecture: everything that differs between the Llama-shaped
// families is a column here (adding such a family is one row; families_test runs every row).
struct FamilyInfo {
  std::string_view architecture;  // config.json "architectures"[0]
  std::string_view name;          // short family name ("llama", "qwen2", ...)
  bool qkv_bias;                  // q/k/v projections always carry a bias
  bool qk_norm;                   // RMSNorm on each head of q and k before RoPE
  const TensorNames* names;
  std::string_view gguf_arch;  // GGUF general.architecture ("llama" for Mistral too)
  // config.json's sliding_window applies as it is (Mistral); else only with use_sliding_window.
  bool window_always;
  // GGUF as convert_hf_to_gguf.py's LlamaModel writes it: q/k rows permuted to ggml's
  // interleaved RoPE order (undone at load), llama.vocab_size and rope.dimension_count keys,
  // add_prefix_space kept, Llama-3 rope_scaling as rope_freqs.weight.
  bool gguf_llama_layout;
};

std::span<const FamilyInfo> FamilyTable();
const FamilyInfo* FindFamily(std::string_view architecture);
std::string SupportedArchitectures();  // comma-separated, for error messages
// The family a GGUF general.architecture loads as (the first row with that gguf_arch:
// "llama" -> LlamaForCausalLM), or null.
const FamilyInfo* FindFamilyByGgufArch(std::string_view gguf_arch);
std::string SupportedGgufArchitectures();  // comma-separated, for error messages
// llama.cpp's tensor names (llama-arch.cpp), shared by every GGUF architecture qforge runs.
const TensorNames& GgufTensorNames();

struct RopeScaling {
  // kFactors: llama.cpp's per-frequency divisors (GGUF rope_freqs.weight, which is how a
  // converter stores Llama-3 scaling), one per rotary pair, in freq_factors.
  enum class Type { kNone, kLinear, kLlama3, kFactors } type = Type::kNone;
  double factor = 1.0;
  double low_freq_factor = 1.0;          // llama3
  double high_freq_factor = 4.0;         // llama3
  int64_t original_max_position = 8192;  // llama3
  std::vector<float> freq_factors;       // kFactors: [head_dim / 2]
};

struct ModelConfig {
  const FamilyInfo* family = nullptr;
  int64_t vocab_size = 0;
  int64_t hidden = 0;        // model width (embedding length)
  int64_t intermediate = 0;  // SwiGLU width
  int64_t layers = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;      // explicit in config.json or hidden / heads
  int64_t max_position = 0;  // context length
  double rms_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_embeddings = false;
  bool qkv_bias = false;       // family default or attention_bias
  int64_t sliding_window = 0;  // 0 = full attention
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  std::string torch_dtype;

  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
};

// Refuses dimensions beyond what qforge supports (each far above any released model), so that
// products of them (q_dim, parameter counts, buffer sizes) cannot overflow; `source` names the
// file in the Error. Both config parsers (config.json, GGUF metadata) call it.
Status CheckDimensions(const ModelConfig& c, const std::string& source);

// Parses config.json text; `source` names the file in errors.
Result<ModelConfig> ParseHfConfig(std::string_view json_text, const std::string& source);
Result<ModelConfig> LoadHfConfig(const std::filesystem::path& model_dir);
// An error naming the checkpoint's quant_method when model_dir/config.json has a
// quantization_config (its linears are codes and scales, not weights): `what` ("quantize",
// "convert") takes unquantized weights. Ok otherwise, and when config.json is unreadable (the
// loader reports that).
Status CheckUnquantized(const std::filesystem::path& model_dir, std::string_view what);

// Expands a "{}" layer pattern.
std::string LayerTensorName(const char* pattern, int64_t layer);

}  // namespace qf::model
