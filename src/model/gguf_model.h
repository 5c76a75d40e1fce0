// GGUF files (llama.cpp's model format, as `qforge convert` / `qforge quantize --scheme Q4_K_M`,
// convert_hf_to_gguf.py or llama-quantize write them) as qforge models: the ModelConfig from
// the metadata here, the weights in Model::LoadGguf (gguf_model.cc).
//
// Contract: general.architecture "llama" (Llama, Mistral), "qwen2" and "qwen3", through the
// family table of model/config.h (gguf_arch); llama.cpp's key names (<arch>.block_count,
// .embedding_length, .feed_forward_length, .attention.head_count[_kv], .attention.key_length,
// .attention.layer_norm_rms_epsilon, .rope.freq_base, .rope.scaling.type/.factor,
// .context_length; tokenizer.ggml.bos/eos_token_id) and tensor names (GgufTensorNames()).
// Vocabulary size from token_embd's rows; tied embeddings when output.weight is absent;
// q/k/v biases when the family has them or blk.0.attn_q.bias is present; rope_freqs.weight
// (Llama-3 scaling as converters store it) as RopeScaling::kFactors.
// Weights: F32/F16/BF16 tensors become fp32 (checked finite); ggml block tensors (Q4_0..Q8_0,
// Q2_K..Q6_K, IQ4_NL, IQ4_XS) stay in the file mapping, which the Linears keep alive, and run
// through kernels::MatMulGgmlNT; the token embedding table alone is decoded to fp32 (a lookup).
// For arch llama the q/k rows (and biases), which converters store in ggml's interleaved RoPE
// order, are put back in rotate-half order at load: whole rows of blocks are moved into an
// owned copy. Anything else — unknown architecture or tensor, missing tensor, shape or type
// mismatch, ggml types without a decoder (IQ2_XXS, ...) — is a one-line Error naming the file
// and the key or tensor.
#pragma once

#include <filesystem>

#include "core/result.h"
#include "io/gguf.h"
#include "model/config.h"

namespace qf::model {

// A regular file named *.gguf, or whose first four bytes are the GGUF magic.
bool IsGgufFile(const std::filesystem::path& path);

// The configuration a GGUF file's metadata (and tensor shapes) describe.
Result<ModelConfig> GgufModelConfig(const io::GgufFile& file);

}  // namespace qf::model
