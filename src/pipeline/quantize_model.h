// The quantization driver: streams a model's linears through a method into a QuantizedTensor per
// linear and writes a compressed-tensors folder. A method is an optional equivalent transform
// (AWQ or SmoothQuant scales folded into the preceding norm/linear) followed by a solver (RTN or
// GPTQ); weight+activation schemes add the activation row each linear applies at run time.
// Contract: output bytes depend only on the inputs and options (deterministic); the output
// folder appears only when everything succeeded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/result.h"
#include "formats/activation.h"
#include "formats/ggml_blocks.h"
#include "formats/scheme.h"
#include "io/safetensors_writer.h"
#include "pipeline/calibration.h"
#include "pipeline/rotate.h"
#include "methods/hessian.h"
#include "methods/qat.h"

namespace qf::pipeline {

// A --method: an optional equivalent transform, then a solver, then optionally block-wise
// quantization-aware training (methods/qat) starting from the solver's rounding.
enum class Transform : uint8_t { kNone, kAwq, kSmoothQuant };
enum class Solver : uint8_t { kRtn, kGptq };
struct Method {
  Transform transform = Transform::kNone;
  Solver solver = Solver::kRtn;
  bool qat = false;
  // MSE clip search by default: GPTQ (it beats the authors' plain min-max groups), AWQ (part
  // of the method) and QAT (a better start); RTN and SmoothQuant keep plain min-max (their
  // references' defaults).
  bool ClipsByDefault() const {
    return solver == Solver::kGptq || transform == Transform::kAwq || qat;
  }
};
// rtn | gptq | awq | smoothquant | awq+gptq | smoothquant+gptq (and awq+rtn, smoothquant+rtn),
// qat | gptq+qat | awq+qat | awq+gptq+qat; an unknown name is an Error listing them.
Result<Method> ParseMethod(std::string_view name);
std::string_view TransformName(Transform t);  // "", "awq", "smoothquant"

struct QuantizeOptions {
  QuantScheme scheme;
  // rtn | gptq | awq | smoothquant, or transform+solver: awq+gptq, smoothquant+gptq,
  // smoothquant+rtn (= smoothquant), awq+rtn (= awq).
  std::string method = "rtn";
  std::optional<ActScheme> act;     // activation row (W8A8, FP8...); none: weight-only
  double alpha = 0.5;               // SmoothQuant migration strength
  bool clip = false;                // MSE clipping search per parameter set
  bool act_order = false;           // GPTQ: columns by descending diag(H)
  double damp = 0.01;               // GPTQ: dampening, fraction of mean(diag H)
  CalibrationOptions calib;         // GPTQ: calibration windows
  std::vector<std::string> ignore;  // module names, or "re:REGEX"; lm_head always kept
  uint64_t seed = 0;
  // --rotate: the model's norms folded and its residual stream rotated first (pipeline/rotate.h);
  // the method then runs on that equivalent model.
  std::optional<RotateOptions> rotate;
  uint64_t max_shard_bytes = io::kDefaultMaxShardBytes;  // --max-shard-size
  methods::QatOptions qat;  // --method *qat: epochs, learning rates, batch (seed: seed)
  int e2e_epochs = 0;       // --method *qat: then end-to-end scale tuning (lr_q, batch)
  // --method *qat: called after each training step (layer, or -1 for the end-to-end tuning;
  // step, steps of that stage, loss).
  std::function<void(int64_t, int64_t, int64_t, double)> qat_progress;
};

struct LinearReport {
  std::string module;    // e.g. model.layers.0.self_attn.q_proj
  std::string scheme;    // row applied (after fallback)
  std::string fallback;  // why it differs from the requested scheme, or empty
  int64_t n = 0, k = 0;
  double rel_mse = 0;     // Σ(w − ŵ)² / Σw²
  double snr_db = 0;      // −10·log10(rel_mse)
  double gptq_loss = 0;   // GPTQ objective (0 for RTN)
  std::string act;        // activation row applied at run time, or empty
  float input_scale = 0;  // its calibrated static scale (static rows)
};

// The scales one transform chose for the linears reading one input.
struct TransformReport {
  std::string input;                // e.g. model.layers.0.input_layernorm, ...mlp.up_proj
  std::string method;               // awq | smoothquant
  double ratio = 0;                 // AWQ's α, SmoothQuant's alpha
  bool duo = false;                 // AWQ: weight-normalised form won
  double loss = 0, loss_plain = 0;  // AWQ: output error of the scaled / unscaled RTN
  float scale_min = 0, scale_max = 0;
};

struct QuantizeReport {
  std::vector<LinearReport> linears;
  std::vector<methods::QatBlockReport> qat;      // per block, --method *qat
  std::optional<methods::QatE2eReport> qat_e2e;  // --e2e-epochs
  // The norm weights QAT trained (--block-norms, --e2e-norms, --e2e-final-norm) by source
  // tensor name, as written (rounded to the source's dtype), instead of the source's.
  std::map<std::string, std::vector<float>> trained_norms;
  std::vector<TransformReport> transforms;
  std::vector<std::string> kept;  // modules left unquantized (ignored)
  int64_t quantized_params = 0;
  int64_t total_params = 0;
  double bits_per_weight = 0;  // of quantized linears, scales and zeros included
  uint64_t output_bytes = 0;
  int64_t calib_samples = 0, calib_tokens = 0;
  bool calib_from_model = false;  // no --calib: windows sampled from the model itself
  // Time breakdown: calibration data, forward passes over it, Hessians, solving/rounding, write.
  double seconds_calib_data = 0, seconds_forward = 0, seconds_statistics = 0;
  double seconds_quantize = 0, seconds_write = 0, seconds_qat = 0;
  double seconds_rotate = 0;  // --rotate: writing the rotated copy
  // Under mpirun: the ranks, and the time spent folding statistics across them (and waiting).
  int ranks = 1;
  double seconds_reduce = 0;
  // Peak resident memory: the process's true peak (getrusage), and the highest RssAnon (what
  // qforge allocated) and RssFile (mapped model pages, reclaimable) seen during the run.
  int64_t peak_rss_bytes = 0, peak_rss_anon_bytes = 0, peak_rss_file_bytes = 0;
};

using LayerProgress = std::function<void(int64_t done, int64_t total)>;

// Errors for unknown methods and flags that do not apply to the method (QuantizeModel checks
// this first; the CLI calls it before printing anything).
Status CheckOptions(const QuantizeOptions& opt);
// The QAT flags' ranges (--epochs, --e2e-epochs >= 0, --batch >= 1, --lr, --lr-q >= 0).
Status CheckQatOptions(const methods::QatOptions& qat, int e2e_epochs);
// Whether the method needs calibration data (GPTQ, AWQ, SmoothQuant, static activations).
bool NeedsCalibration(const QuantizeOptions& opt);

// A calibrated true-sequential pass whose solver the caller supplies (the GGUF writer's GPTQ
// k-quants and QAT): each decoder linear, in GPTQ's order, is handed to `solve` with the Hessian
// of its input over the calibration tokens (the earlier linears already solved), and `solve`
// returns the weights the model runs with from then on (its dequantized result). With
// `lm_head`, the output projection follows last (input: the final-norm output). opt.method is
// gptq, qat or gptq+qat (no transform); opt.calib, damp, seed and the QAT options apply. With
// QAT, the linears whose result comes as ggml blocks (any type with codes) are trained block by
// block starting from them (and end to end with opt.e2e_epochs); each linear's trained blocks go
// to `write`, which stores them in the caller's file and returns the values they hold (after
// each block's training, and again after the end-to-end tuning). The report holds calibration
// figures, times, the QAT losses and peak RSS; its linears have no scheme.
struct SolveRequest {
  const std::string& weight_name;  // Hugging Face name, e.g. model.layers.0.self_attn.q_proj.weight
  std::span<const float> weight;   // [n, k] as the model holds it (fp32)
  int64_t n, k;
  const methods::HessianAccumulator& hessian;
};
struct Solved {
  std::vector<float> weights;  // [n, k]: what the model runs with
  // The same values as ggml blocks of this type (when not null), for QAT to train.
  const GgmlBlockType* block_type = nullptr;
  std::vector<std::byte> blocks;
};
using LinearSolver = std::function<Result<Solved>(const SolveRequest&)>;
using BlocksWriter = std::function<Result<std::vector<float>>(const std::string& weight_name,
                                                              std::span<const std::byte> blocks)>;
Result<QuantizeReport> RunCalibratedSolver(const std::filesystem::path& src,
                                           const QuantizeOptions& opt, bool lm_head,
                                           const LinearSolver& solve,
                                           const BlocksWriter& write = {},
                                           const LayerProgress& progress = {});

Result<QuantizeReport> QuantizeModel(const std::filesystem::path& src,
                                     const std::filesystem::path& out, const QuantizeOptions& opt,
                                     const LayerProgress& progress = {});

}  // namespace qf::pipeline
