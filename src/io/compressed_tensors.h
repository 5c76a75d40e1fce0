// compressed-tensors checkpoints (what llm-compressor writes and vLLM / transformers load): write a
// quantized model folder from qforge QuantizedTensors and read its quantized linears back.
// Contract: writing is deterministic (same inputs -> same bytes) and atomic per file; reading
// validates every tensor (presence, dtype, shape against N, K, G, ranges) and returns Errors that
// name the file, the tensor and expected vs actual. Layouts and sources: compressed_tensors.cc.
//
// Tensors per quantized linear <m> (N output rows, K input columns, G group size, b bits):
//   int, no input activations  -> format "pack-quantized":
//     <m>.weight_packed  I32 [N, ceil(K*b/32)]   codes packed along K, lowest index lowest bits
//     <m>.weight_shape   I64 [2] = {N, K}
//     <m>.weight_scale   S   [N, K/G] group | [N, 1] channel | [1] tensor
//     <m>.weight_zero_point (asymmetric only) I32 [ceil(N*b/32), K/G or 1] packed along N for
//       group/channel; I8 [1] holding zero - 2^(b-1) for tensor
//   int with input activations -> "int-quantized": <m>.weight I8 [N, K] = code - 2^(b-1),
//     weight_scale as above, asymmetric weight_zero_point I8 (shape of the scale) = zero - 2^(b-1)
//   fp8 e4m3 -> "naive-quantized" (weights only) or "float-quantized" (with input activations):
//     <m>.weight F8_E4M3 [N, K], <m>.weight_scale S [1] tensor | [N, 1] channel
//   static input activations add <m>.input_scale S [1].
// S is the scale dtype (CompressedTensorsWriteOptions::scale_dtype). b = 3 uses the dense layout of
// compressed-tensors >= 0.18 (values straddle words); 3-bit files from older versions are refused.
// Reading also accepts F32/BF16/F16 scales, a scalar per-tensor scale, I32 weight_shape, and I32
// unpacked zero points.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/result.h"
#include "formats/activation.h"
#include "formats/quantize.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace qf::io {

// One compressed-tensors QuantizationArgs block ("weights", "input_activations", ...). Defaults
// are the pydantic defaults; `strategy` is always resolved (from group_size when absent).
struct CtQuantArgs {
  int num_bits = 8;
  std::string type = "int";  // "int" | "float"
  bool symmetric = true;
  std::string strategy = "tensor";       // tensor|channel|group|block|token|tensor_group|attn_head
  std::optional<int64_t> group_size;     // G for group strategies; -1 or none otherwise
  bool dynamic = false;                  // true: parameters computed at run time (activations)
  std::optional<std::string> actorder;   // "group" | "weight" | none
  std::optional<std::string> observer;   // "minmax" for static args, none for dynamic ones
  std::vector<int64_t> block_structure;  // [rows, cols] for strategy "block", else empty

  nlohmann::json ToJson() const;  // the key set every compressed-tensors >= 0.11 accepts
};

struct CtSchemeGroup {
  std::string name;                  // "group_0", ...
  std::vector<std::string> targets;  // "Linear", exact module names, or "re:<regex>"
  std::optional<CtQuantArgs> weights;
  std::optional<CtQuantArgs> input_activations;
  std::optional<CtQuantArgs> output_activations;
  std::string format;  // this group's format; the config's global format when the file has none
};

// input_activations args of an activation row, as llm-compressor's presets write them: 8 bits,
// symmetric, type "int" (int8-*) or "float" (fp8-e4m3-*); per-token rows {strategy "token",
// dynamic true, observer none}, per-tensor rows {strategy "tensor", dynamic false, observer
// "minmax"} (static: one input_scale per linear).
CtQuantArgs CtArgsFromActScheme(const ActScheme& s);
// The activation row qforge runs for input_activations args; an Error naming the field for
// anything else: other bit widths, asymmetric, dynamic per-tensor, static per-token, channel /
// group / block / attn_head strategies.
Result<ActScheme> ActSchemeFromCt(const CtQuantArgs& a);

// The parsed quantization_config of a config.json.
struct CompressedTensorsConfig {
  std::string source;                 // file name for errors
  std::string format;                 // global format ("pack-quantized", "mixed-precision", ...)
  std::string quantization_status;    // "compressed" for checkpoints qforge can read
  std::string version;                // compressed-tensors version that wrote it; may be empty
  std::vector<CtSchemeGroup> groups;  // in config order
  std::vector<std::string> ignore;    // exact module names or "re:<regex>"
  std::optional<CtQuantArgs> kv_cache_scheme;
  nlohmann::json qforge;  // the "qforge" metadata block; null when absent

  bool Ignored(const std::string& module) const;
  // The group a Linear named `module` falls in (exact name, then regex, then the "Linear" class
  // target: the priority of vLLM and compressed-tensors), or nullptr; nullptr when ignored.
  const CtSchemeGroup* FindGroup(const std::string& module) const;
};

// Returns nullopt when config_json has no "quantization_config"; an Error when it has one that is
// not compressed-tensors or is malformed (unknown type, strategy or format).
Result<std::optional<CompressedTensorsConfig>> ParseQuantizationConfig(
    const nlohmann::json& config_json, const std::string& source);
// The same for <model_dir>/config.json.
Result<std::optional<CompressedTensorsConfig>> LoadQuantizationConfig(
    const std::filesystem::path& model_dir);

// The QuantizedTensor of linear `module` (W[n, k]): codes unpacked to qforge's unsigned codes,
// scales as float, zeros as qforge's unsigned zero points. nullopt when the module is ignored or
// no group targets it. Errors for missing/misshapen tensors, act-order (weight_g_idx), schemes
// qforge has no row for, non-finite or non-positive scales, out-of-range values.
Result<std::optional<QuantizedTensor>> ReadQuantizedLinear(const TensorStore& store,
                                                           const CompressedTensorsConfig& cfg,
                                                           const std::string& module, int64_t n,
                                                           int64_t k);
// <module>.input_scale (static activation quantization), or nullopt when the file has none.
Result<std::optional<float>> ReadInputScale(const TensorStore& store, const std::string& module);

// The model parameters a store holds, counting a quantized linear by its logical [N, K]
// (weight_shape), not by its packed storage; scales, zero points and input scales are metadata,
// not parameters. For a checkpoint without quantization: every tensor's element count.
int64_t LogicalParameterCount(const TensorStore& store);

struct QuantizedLinearEntry {
  std::string module;  // e.g. "model.layers.0.self_attn.q_proj"
  const QuantizedTensor* q = nullptr;
};

struct CompressedTensorsWriteOptions {
  // Dtype of weight_scale / input_scale: "auto" = the source config's torch_dtype (or "dtype")
  // when it is bfloat16 / float16 / float32, else F32 (compressed-tensors gives scales the
  // weight's dtype); or "f32", "bf16", "f16". Scales must already be exact in that dtype: the
  // quantizer rounds them (RoundScaleForStorage) before encoding codes; the writer only checks.
  std::string scale_dtype = "auto";
  nlohmann::json qforge_metadata;  // stored as quantization_config["qforge"] unless null
  std::vector<std::string> ignore = {"lm_head"};
  // Written into every config group when given, e.g. FP8_DYNAMIC's {num_bits 8, type "float",
  // strategy "token", dynamic true}. Changes the format (see the file comment).
  std::optional<CtQuantArgs> input_activations;
  // module -> static activation scale; one per linear iff input_activations is static.
  std::map<std::string, float> input_scales;
  // Tensor data per model-0000i-of-0000N.safetensors shard (safetensors_writer.h).
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;
};

// Writes out_dir/model.safetensors, or its shards and index when the tensors take more than
// opt.max_shard_bytes (passthrough tensors as given plus every linear's tensors, metadata
// {"format": "pt"}), out_dir/config.json (src_dir/config.json with quantization_config
// replaced) and copies the tokenizer files present in src_dir. Linears are grouped by scheme: the
// most common scheme targets "Linear", the others list their modules by name. Errors: out_dir ==
// src_dir, a quantized module in `ignore`, a passthrough "<m>.weight" of a quantized module or of
// an unlisted linear (a 2-D weight named like a quantized one, e.g. "...q_proj", not in `ignore`:
// vLLM would load it as quantized), fp8 e5m2, scales not exact in the scale dtype.
// 2- and 3-bit weights are written in the same layout, but vLLM runs only 4- and 8-bit ones.
Status WriteCompressedTensors(const std::filesystem::path& out_dir,
                              const std::filesystem::path& src_dir,
                              const std::vector<TensorToWrite>& passthrough,
                              const std::vector<QuantizedLinearEntry>& linears,
                              const CompressedTensorsWriteOptions& opt);

// One quantized linear's tensors in the layout its scheme and with_activations select
// (weight_packed + weight_shape, or int8 / fp8 weight; weight_scale in scale_dtype;
// weight_zero_point when asymmetric; input_scale when input_scales has the module), owned. Errors:
// an invalid QuantizedTensor, e5m2, scales not exact in scale_dtype.
struct EncodedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<std::byte> bytes;
};
Result<std::vector<EncodedTensor>> EncodeLinear(const QuantizedLinearEntry& e,
                                                bool with_activations, DType scale_dtype,
                                                const std::map<std::string, float>& input_scales);

// A linear whose tensors were encoded ahead (EncodeLinear), e.g. held in a TensorSpill.
struct EncodedLinear {
  std::string module;
  QuantScheme scheme;
};
// WriteCompressedTensors for linears encoded ahead: `encoded` holds their tensors (made with
// the scale dtype opt.scale_dtype resolves to, and with_activations = opt.input_activations).
Status WriteCompressedTensors(const std::filesystem::path& out_dir,
                              const std::filesystem::path& src_dir,
                              const std::vector<TensorToWrite>& passthrough,
                              const std::vector<EncodedLinear>& linears,
                              const std::vector<TensorToWrite>& encoded,
                              const CompressedTensorsWriteOptions& opt);

// The scale dtype `opt.scale_dtype` resolves to for a source config.json.
Result<DType> ResolveScaleDType(const std::string& scale_dtype, const nlohmann::json& src_config);

}  // namespace qf::io
