// A decoder-only transformer (Llama/Mistral/Qwen2/Qwen3 families) in fp32 on the CPU:
// weights, KV cache and the one forward pass all families share.
// Legend: M new tokens, T cached tokens, H hidden, F intermediate, V vocabulary,
// Hq/Hkv query/key-value heads of D dims. All matrices row-major.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/memory.h"
#include "core/result.h"
#include "formats/activation.h"
#include "formats/quantize.h"
#include "kernels/qgemm.h"
#include "model/config.h"

namespace qf::io {
class TensorStore;
struct CompressedTensorsConfig;
}  // namespace qf::io

namespace qf::model {

// y = x · Wᵀ (+ b), with W either fp32, quantized (compressed-tensors codes in the kernels'
// layout: kernels::MatMulQuantNT) or ggml blocks of a GGUF file (kernels::MatMulGgmlNT).
// With act enabled (W8A8, FP8: the checkpoint's input_activations), x is quantized: int8
// activations with int8 per-channel/tensor weights multiply as integers (MatMulQuantNT's
// contract); otherwise x is replaced by QuantizeActivations(x), the values an int8/fp8 GEMM on
// the codes would see.
struct Linear {
  AlignedVector<float> weight;  // [N, K] when not quantized, else empty (64-byte aligned rows)
  // [N, K] bf16 bit patterns instead of `weight`: an unquantized linear (lm_head) of a quantized
  // checkpoint that stores it in bf16, held as stored (kernels::MatMulBf16NT); else empty.
  std::vector<uint16_t> bf16;
  std::shared_ptr<const kernels::QuantMatrix> quant;  // codes [N, K] + scales/zeros, or null
  std::shared_ptr<const GgmlTensor> ggml;             // ggml blocks [N, K] (GGUF), or null
  std::vector<float> bias;                            // [N] or empty
  ActQuant act;                                       // input quantization; disabled by default
  int64_t n = 0, k = 0;

  // x[M,K] -> y[M,N]. Thread-safe (const; activation buffers are per thread).
  void Apply(const float* x, float* y, int64_t m) const;
};

// Reads one tensor of a store as fp32, checking its shape and that every value is finite.
Result<std::vector<float>> ReadTensorF32(const io::TensorStore& store, const std::string& name,
                                         const std::vector<int64_t>& shape);
// The same into cache-line-aligned storage (a linear's weight).
Result<AlignedVector<float>> ReadWeightF32(const io::TensorStore& store, const std::string& name,
                                           const std::vector<int64_t>& shape);

// The linears of a decoder block, in the order GPTQ's true-sequential pass visits them.
enum class LinearId : uint8_t { kQ, kK, kV, kO, kGate, kUp, kDown };
inline constexpr std::array<LinearId, 7> kBlockLinears = {
    LinearId::kQ,    LinearId::kK,  LinearId::kV,   LinearId::kO,
    LinearId::kGate, LinearId::kUp, LinearId::kDown};
// The tensor-name pattern of a linear's weight ("model.layers.{}.self_attn.q_proj.weight").
const char* WeightPattern(const TensorNames& nm, LinearId id);

struct Layer {
  std::vector<float> attn_norm;  // [H]
  Linear q, k, v, o;             // q [Hq·D, H], k/v [Hkv·D, H], o [H, Hq·D]
  std::vector<float> q_norm;     // [D] (Qwen3) or empty
  std::vector<float> k_norm;     // [D] (Qwen3) or empty
  std::vector<float> ffn_norm;   // [H]
  Linear gate, up, down;         // gate/up [F, H], down [H, F]

  Linear& operator[](LinearId id);
  const Linear& operator[](LinearId id) const;
};

// Keys/values of the tokens seen so far, plus the RoPE tables for `capacity` positions.
struct KVCache {
  int64_t capacity = 0;
  int64_t len = 0;
  std::vector<std::vector<float>> k, v;  // per layer [capacity, Hkv·D]
  std::vector<float> cos, sin;           // [capacity, D/2]
  // Activation buffers reused across Forward calls (grown on demand, never re-zeroed).
  std::vector<float> x, h, q, att, g, u;  // [M, H] x2, [M, Hq·D] x2, [M, F] x2

  void Clear() { len = 0; }
};

// Multiply-add FLOPs (2 per MAC) per token of a full causal window of ctx tokens: every
// linear including lm_head, plus QKᵀ and PV over the (ctx + 1) / 2 keys seen on average.
double FlopsPerToken(const ModelConfig& c, int64_t ctx);

// One decoder layer's weights from a store; linears covered by `qc` stay quantized.
Result<Layer> ReadLayer(const io::TensorStore& store, const ModelConfig& c, int64_t layer,
                        const io::CompressedTensorsConfig* qc);

// RoPE cos/sin tables [positions, D/2] for the config's θ and scaling.
void RopeTables(const ModelConfig& c, int64_t positions, std::vector<float>* cos,
                std::vector<float>* sin);

class Model {
 public:
  // Loads a Hugging Face model folder (config.json + safetensors), converting weights to fp32,
  // or a GGUF file (a regular file named *.gguf or starting with the GGUF magic: LoadGguf).
  // Validates every tensor's presence, shape and finiteness.
  static Result<Model> Load(const std::filesystem::path& path);
  // A llama.cpp GGUF file (model/gguf_model.h): F32/F16/BF16 tensors as fp32, ggml block
  // tensors kept in the file mapping and run through kernels::MatMulGgmlNT.
  static Result<Model> LoadGguf(const std::filesystem::path& file);

  const ModelConfig& config() const { return config_; }
  const std::filesystem::path& path() const { return path_; }
  uint64_t file_bytes() const { return file_bytes_; }
  // Parameters as the files hold them, a quantized linear counted by its logical [N, K]
  // (io::LogicalParameterCount; GGUF: every tensor's logical size).
  int64_t parameter_count() const { return params_; }

  KVCache NewCache(int64_t capacity) const;
  // One decoding step for B independent sequences of equal length (caches[b].len the same for
  // all): token b is appended to caches[b]; logits [B, V]. The linears run as one [B, ·] GEMM,
  // so the weights are streamed once for all sequences (batched sampling, calibration).
  Status ForwardBatchStep(std::span<const int32_t> tokens, std::vector<KVCache>& caches,
                          float* logits) const;

  const std::vector<Layer>& layers() const { return layers_; }
  // The linears whose prefill multiplies quantized activations as integers switched to the
  // float path instead: W8A8 activations quantized and dequantized, then the weight kernels in
  // fp32; integer weight-only and ggml blocks' prefill on decoded float tiles instead of 16-bit
  // (A16) or Q8 activations (what qforge did before the integer GEMMs; tests compare the two).
  void UseFloatActivationGemm();
  const std::vector<float>& embedding() const { return embed_; }        // [V, H]
  const std::vector<float>& final_norm() const { return final_norm_; }  // [H]
  const Linear& lm_head() const { return lm_head_; }

  // Runs `tokens` at positions cache.len.. and appends them to the cache. Writes logits
  // [M, V] for every token when all_logits, else only the last token's [V].
  Status Forward(std::span<const int32_t> tokens, KVCache& cache, float* logits,
                 bool all_logits) const;

 private:
  ModelConfig config_;
  std::filesystem::path path_;
  uint64_t file_bytes_ = 0;
  int64_t params_ = 0;
  std::vector<float> embed_;       // [V, H]
  std::vector<float> final_norm_;  // [H]
  Linear lm_head_;                 // [V, H]; a copy of embed_ when tied
  std::vector<Layer> layers_;
};

}  // namespace qf::model
