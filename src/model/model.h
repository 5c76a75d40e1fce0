// A decoder-only transformer (Llama/Mistral/Qwen2/Qwen3 families) in fp32 on the CPU:
// weights, KV cache and the one forward pass all families share.
// Legend: M new tokens, T cached tokens, H hidden, F intermediate, V vocabulary,
// Hq/Hkv query/key-value heads of D dims. All matrices row-major.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/result.h"
#include "formats/activation.h"
#include "formats/quantize.h"
#include "kernels/qgemm.h"
#include "model/config.h"

namespace qf::io {
class TensorStore;
struct CompressedTensorsConfig;
}

namespace qf::model {

// y = x · Wᵀ (+ b), with W either fp32, quantized (compressed-tensors codes) or ggml blocks
// of a GGUF file (both dequantized tile by tile in the kernel).
// With act enabled (W8A8, FP8: the checkpoint's input_activations), x is first replaced by
// QuantizeActivations(x), the values an int8/fp8 GEMM on the codes would see.
struct Linear {
  std::vector<float> weight;                     // [N, K] when not quantized, else empty
  std::shared_ptr<const QuantizedTensor> quant;  // codes [N, K] + scales/zeros, or null
  std::shared_ptr<const GgmlTensor> ggml;        // ggml blocks [N, K] (GGUF), or null
  std::vector<float> bias;                       // [N] or empty
  ActQuant act;                                  // input quantization; disabled by default
  int64_t n = 0, k = 0;

  // x[M,K] -> y[M,N]. Thread-safe (const; activation buffers are per thread).
  void Apply(const float* x, float* y, int64_t m) const;
};

// Reads one tensor of a store as fp32, checking its shape and that every value is finite.
Result<std::vector<float>> ReadTensorF32(const io::TensorStore& store, const std::string& name,
                                         const std::vector<int64_t>& shape);

struct Layer {
  std::vector<float> attn_norm;  // [H]
  Linear q, k, v, o;             // q [Hq·D, H], k/v [Hkv·D, H], o [H, Hq·D]
  std::vector<float> q_norm;     // [D] (Qwen3) or empty
  std::vector<float> k_norm;     // [D] (Qwen3) or empty
  std::vector<float> ffn_norm;   // [H]
  Linear gate, up, down;         // gate/up [F, H], down [H, F]
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

// The stages of one decoder layer on M tokens at positions pos0.. (x[M,H] is the residual
// stream). Calibration drivers call them one by one to observe each linear's input and to
// quantize a layer stage by stage; RunLayer chains them for the forward pass.
void AttnNorm(const ModelConfig& c, const Layer& L, const float* x, float* h, int64_t m);
// q/k/v projections of h (k/v stored at rows pos0.. of the caches [T, Hkv·D]), q/k norm,
// RoPE, attention: att[M, Hq·D]; q[M, Hq·D] is scratch.
void Attend(const ModelConfig& c, const Layer& L, const float* h, float* q, float* att, int64_t m,
            int64_t pos0, float* k_cache, float* v_cache, const float* cos, const float* sin);
// x[M, N] += in · linᵀ, using tmp[M, N].
void AddProjection(const Linear& lin, const float* in, float* tmp, float* x, int64_t m);
void FfnNorm(const ModelConfig& c, const Layer& L, const float* x, float* h, int64_t m);
// g[M,F] = silu(gate·h) * (up·h); u[M,F] is scratch.
void SwiGlu(const ModelConfig& c, const Layer& L, const float* h, float* g, float* u, int64_t m);

struct LayerIo {
  float* x;    // [M, H] residual stream, updated in place
  float* h;    // [M, H] scratch
  float* q;    // [M, Hq·D] scratch
  float* att;  // [M, Hq·D] scratch
  float* g;    // [M, F] scratch
  float* u;    // [M, F] scratch
};
void RunLayer(const ModelConfig& c, const Layer& L, const LayerIo& io, int64_t m, int64_t pos0,
              float* k_cache, float* v_cache, const float* cos, const float* sin);

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
  int64_t parameter_count() const { return params_; }

  KVCache NewCache(int64_t capacity) const;
  // One decoding step for B independent sequences of equal length (caches[b].len the same for
  // all): token b is appended to caches[b]; logits [B, V]. The linears run as one [B, ·] GEMM,
  // so the weights are streamed once for all sequences (batched sampling, calibration).
  Status ForwardBatchStep(std::span<const int32_t> tokens, std::vector<KVCache>& caches,
                          float* logits) const;

  const std::vector<Layer>& layers() const { return layers_; }
  const std::vector<float>& embedding() const { return embed_; }  // [V, H]
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
