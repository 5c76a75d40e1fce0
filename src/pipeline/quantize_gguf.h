// Quantizing a Hugging Face folder straight into a llama.cpp GGUF file with one of llama.cpp's
// mixes (--scheme Q4_K_M, ...): the tensor plan and metadata of `qforge convert`, each tensor's
// ggml type from formats/gguf_mix, its blocks from formats/ggml_blocks (optionally weighted by
// an importance matrix per input column). The source may also be a .gguf file, as for
// llama-quantize: its metadata is copied in order (general.quantization_version and
// general.file_type re-set at the end, earlier quantize.* keys dropped), its tensors taken in
// its order, float tensors read as fp32 (blocks decoded only with allow_requantize); a tensor
// whose type stays the same is copied. So `convert` then `quantize` of the .gguf writes the
// bytes `quantize` writes from the folder. GPTQ needs the folder (its calibration pass).
// Contract: without an importance matrix every quantized tensor has the bytes llama-quantize
// writes for the same weights and type (ggml_blocks is bit-exact; the types follow its rules);
// the output is written atomically and is a pure function of the inputs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/result.h"
#include "formats/gguf_mix.h"
#include "pipeline/calibration.h"
#include "pipeline/quantize_model.h"

namespace qf::pipeline {

struct GgufQuantizeOptions {
  const GgufMix* mix = nullptr;
  MixContext ctx;  // layers/gqa/tied are filled in from the model; the rest from flags
  // GGUF tensor name -> importance per input column (mean x², llama.cpp's imatrix); empty: none.
  std::map<std::string, std::vector<float>> imatrix;
  std::string imatrix_file, imatrix_dataset;  // recorded as quantize.imatrix.* when given
  int64_t imatrix_chunks = 0;
  bool dry_run = false;  // choose types and sizes only, write nothing
  // A .gguf source whose tensors are already ggml blocks: decode and quantize them again
  // (llama-quantize's --allow-requantize); otherwise such a source is an error.
  bool allow_requantize = false;
  // GPTQ k-quants (--method gptq): every decoder linear and the output projection are solved
  // by methods::GptqGgml in a calibrated true-sequential pass (RunCalibratedSolver), their
  // importance being diag(H); token_embd is encoded plainly. No imatrix then.
  bool gptq = false;
  // QAT (--method qat | gptq+qat): the decoder linears' blocks (every type with codes) are
  // trained block by block (methods::GgmlQatLinear) from their rounding (plain, or GPTQ's with
  // gptq) and then, with e2e_epochs, their d end to end; the others are solved as without QAT.
  // Needs the folder, as GPTQ.
  bool qat = false;
  methods::QatOptions qat_options;  // seed: calib.seed
  int e2e_epochs = 0;
  std::function<void(int64_t, int64_t, int64_t, double)> qat_progress;  // as QuantizeOptions'
  CalibrationOptions calib;
  double damp = 0.01;
  // --rotate: the model's norms folded and its residual stream rotated first (pipeline/rotate.h;
  // needs the folder, and no imatrix: one measured on the source does not fit the rotated one).
  std::optional<RotateOptions> rotate;
  std::string general_name;  // general.name; empty: the source folder's name
};

struct GgufTensorReport {
  std::string name;
  std::string type;
  std::string fallback;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
  bool used_imatrix = false;
  bool gptq = false;
  bool qat = false;
  double rel_mse = 0;  // GPTQ tensors: Σ(w − ŵ)² / Σw²
};

struct GgufQuantizeReport {
  std::vector<GgufTensorReport> tensors;
  uint64_t file_bytes = 0;
  int64_t quantized_params = 0, total_params = 0;
  double bits_per_weight = 0;  // over the quantized tensors
  double seconds = 0;
  double seconds_rotate = 0;                 // --rotate: writing the rotated copy (within seconds)
  std::optional<QuantizeReport> calibrated;  // the GPTQ / QAT pass (calibration, times, peak RSS)
};

Result<GgufQuantizeReport> QuantizeToGguf(const std::filesystem::path& src,
                                          const std::filesystem::path& out,
                                          const GgufQuantizeOptions& opt,
                                          const std::function<void(size_t, size_t)>& progress = {});

}  // namespace qf::pipeline
