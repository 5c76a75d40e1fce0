// llama.cpp's quantization mixes (Q4_K_M, Q3_K_S, ...): which ggml type each tensor of a model
// gets for a --scheme name, as rows of a table plus llama.cpp's per-tensor rules.
// Contract: for dense Llama/Qwen2/Qwen3/Mistral models, ChooseGgufType gives the type
// llama-quantize chooses (llama.cpp src/llama-quant.cpp: llama_tensor_get_type_impl,
// tensor_type_fallback, tensor_allows_quantization; read at upstream c392e50), including
// --tensor-type overrides, --output-tensor-type, --token-embedding-type and --pure.
#pragma once

#include <cstdint>
#include <optional>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/result.h"

namespace qf {

// One --scheme name: its llama_ftype (general.file_type) and base ggml type.
struct GgufMix {
  std::string_view name;  // "Q4_K_M"
  int ftype;              // LLAMA_FTYPE_MOSTLY_*
  std::string_view base;  // ggml type most tensors get, "Q4_K"
  std::string_view what;  // one line for --help
};
std::span<const GgufMix> GgufMixTable();
// Case-insensitive, '-' and '_' alike; nullptr when not a mix name.
const GgufMix* FindGgufMix(std::string_view name);

enum class TensorCategory : uint8_t {
  kTokenEmbd,
  kOutput,
  kAttnQ,
  kAttnK,
  kAttnV,
  kAttnQkv,
  kAttnOutput,
  kFfnUp,
  kFfnGate,
  kFfnDown,
  kOther,
};
// From a GGUF tensor name ("blk.3.attn_v.weight"), as llama.cpp's tensor_get_category.
TensorCategory CategoryOf(std::string_view gguf_name);

struct MixContext {
  int64_t layers = 0;  // n_layer
  int64_t gqa = 1;     // n_head / n_head_kv
  bool has_imatrix = false;
  bool tied_embeddings = false;  // no output.weight: token_embd is quantized as the output
  bool pure = false;             // --pure: the base type for every quantized tensor
  std::optional<std::string> output_type, token_embd_type;    // ggml type names
  std::vector<std::pair<std::regex, std::string>> overrides;  // --tensor-type REGEX=TYPE
};

// Parses "REGEX=TYPE" (TYPE a ggml block type name or F16/F32/BF16).
Result<std::pair<std::regex, std::string>> ParseTensorTypeOverride(std::string_view spec);

struct TypeChoice {
  std::string type;      // ggml type name: "Q4_K", "Q6_K", ..., or "F32" / "F16" / "BF16"
  bool quantized;        // false: the tensor is not quantized (1-D, norms)
  std::string fallback;  // why the type differs from the rules' choice (shape), or empty
};

// The type of tensor `name` (dims = number of dimensions, cols = row length ne[0], layer = the
// N of "blk.N.", -1 for others). Unquantizable tensors keep `float_type` (F32 for norms).
Result<TypeChoice> ChooseGgufType(const GgufMix& mix, std::string_view name, int dims, int64_t cols,
                                  int64_t layer, const MixContext& ctx,
                                  std::string_view float_type = "F32");

}  // namespace qf
