// Hugging Face folder -> GGUF for llama.cpp (what convert_hf_to_gguf.py does for the families
// qforge supports), in pieces a GGUF quantizer can reuse: architecture metadata, the tokenizer,
// the tensor plan (names, types, the q/k row permutation), and a whole-file converter.
//
// Contract: the output is what llama.cpp expects for arch "llama" (Llama, Mistral), "qwen2" and
// "qwen3": its key names and value types (gguf-py's GGUFWriter), its tensor names
// (llama-arch.cpp), q/k rows permuted from Hugging Face's rotate-half order to ggml's
// interleaved RoPE for arch llama only (convert_hf_to_gguf.py LlamaModel.permute), norms and
// other 1-D tensors in F32 whatever the outtype. Tokenizers: tokenizer.model -> "llama"
// (SentencePiece pieces, scores, types), else a byte-level BPE tokenizer.json -> "gpt2" with
// the llama.cpp pre-tokenizer name recognised from its split regex ("llama-bpe", "qwen2",
// "gpt-2"); special-token ids and add_bos/add_eos as gguf-py's SpecialVocab finds them.
// Anything else (unknown tensors, unexpected shapes, other tokenizers) is a one-line Error;
// the output file is written atomically, so a failed conversion leaves nothing behind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace qf::pipeline {

// llama.cpp's general.file_type (enum llama_ftype) for an all-float file of `type`
// (ALL_F32 = 0, MOSTLY_F16 = 1, MOSTLY_BF16 = 32).
Result<uint32_t> GgufFileType(io::GgmlType type);

// "llama" for Llama and Mistral, "qwen2", "qwen3".
std::string GgufArchitecture(const model::ModelConfig& cfg);

// The general.name of a model folder when none is given: the folder's own name ("." and
// trailing slashes resolved), as convert_hf_to_gguf.py names it.
std::string GgufFolderName(const std::filesystem::path& dir);
// general.* and <arch>.* keys, in the order convert_hf_to_gguf.py writes them. Without a
// file_type, general.file_type and general.quantization_version are left out: a quantizer adds
// them after the tokenizer, where llama-quantize puts them (AddGgufQuantizedFileType).
Status AddGgufModelMetadata(const model::ModelConfig& cfg, const std::string& name,
                            std::optional<uint32_t> file_type, io::GgufWriter* w);
// general.quantization_version (2) then general.file_type, as llama-quantize appends them.
Status AddGgufQuantizedFileType(uint32_t file_type, io::GgufWriter* w);

struct GgufVocabSummary {
  std::string model;  // tokenizer.ggml.model: "llama" or "gpt2"
  std::string pre;    // tokenizer.ggml.pre
  int64_t tokens = 0;
  int64_t merges = 0;
  int64_t bos = -1, eos = -1;
  std::optional<bool> add_bos;  // tokenizer.ggml.add_bos_token, when written
};
// tokenizer.* keys from the model folder (tokenizer.model / tokenizer.json, tokenizer_config.json,
// added_tokens.json, config.json), padded to cfg.vocab_size tokens like the Python converter.
Result<GgufVocabSummary> AddGgufTokenizer(const std::filesystem::path& model_dir,
                                          const model::ModelConfig& cfg, io::GgufWriter* w);

// Whether llama.cpp adds BOS for a model's vocabulary (text::LlamaCppAddsBos on the
// tokenizer.ggml.* keys of a GGUF file, or on those `qforge convert` writes for a folder), and
// the BOS id there (-1: none).
struct VocabBos {
  bool add = false;
  int64_t bos = -1;
};
Result<VocabBos> LlamaCppVocabBos(const std::filesystem::path& model);

// One output tensor: where its values come from and how they are laid out.
struct GgufTensorPlan {
  std::string name;                        // GGUF name ("blk.0.attn_q.weight")
  const io::TensorInfo* source = nullptr;  // nullptr for generated tensors (rope_freqs)
  std::vector<int64_t> shape;              // row-major, as in the source
  bool is_float32_only = false;            // norms, biases, 1-D tensors: F32 in every file type
  int64_t permute_heads = 0;               // > 0: rows permuted rotate-half -> interleaved
  std::vector<float> values;               // generated tensors
};
// Maps every tensor of the store to its GGUF name (order: token_embd, blocks, output_norm,
// output), checking shapes against the config; unknown tensors are an Error.
Result<std::vector<GgufTensorPlan>> PlanGgufTensors(const model::ModelConfig& cfg,
                                                    const io::TensorStore& store);
// The source (Hugging Face) row of output row r of a tensor of `rows` rows: r itself unless
// the plan permutes heads (rows must split into p.permute_heads heads of even size).
int64_t GgufSourceRow(const GgufTensorPlan& p, int64_t r, int64_t rows);
// Writes the plan's values for `p` as `type` (F32, F16 or BF16) into `out` (row-major, with
// the permutation applied). `out` has exactly the tensor's byte size.
Status FillGgufFloatTensor(const GgufTensorPlan& p, io::GgmlType type, std::span<std::byte> out);

struct GgufConvertOptions {
  std::optional<io::GgmlType> outtype;  // F32, F16 or BF16; nullopt = "auto" (the weights' dtype
                                        // when it is f16/bf16, else F16, as convert_hf_to_gguf.py)
  std::string name;                     // general.name; empty = the folder's name
  std::function<void(size_t, size_t)> progress;  // tensors written, total
};

struct GgufConvertReport {
  std::string architecture;
  io::GgmlType outtype = io::GgmlType::kF16;
  size_t tensors = 0;
  uint64_t file_bytes = 0;
  GgufVocabSummary vocab;
  std::vector<std::string> notes;  // things llama.cpp will do differently (sliding window)
};

Result<GgufConvertReport> ConvertHfToGguf(const std::filesystem::path& model_dir,
                                          const std::filesystem::path& out,
                                          const GgufConvertOptions& options);

}  // namespace qf::pipeline
