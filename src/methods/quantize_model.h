// The quantization driver: streams a model's linears one tensor at a time through a method
// (RTN today) into a QuantizedTensor per linear, and writes a compressed-tensors folder.
// Contract: output bytes depend only on the inputs and options (deterministic); the output
// folder appears only when everything succeeded.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "core/result.h"
#include "formats/scheme.h"
#include "methods/calibration.h"

namespace qf::methods {

struct QuantizeOptions {
  QuantScheme scheme;
  std::string method = "rtn";            // rtn | gptq (awq, smoothquant: later)
  bool clip = false;                     // MSE clipping search per parameter set
  bool act_order = false;                // GPTQ: columns by descending diag(H)
  double damp = 0.01;                    // GPTQ: dampening, fraction of mean(diag H)
  CalibrationOptions calib;              // GPTQ: calibration windows
  std::vector<std::string> ignore;       // module names, or "re:REGEX"; lm_head always kept
  uint64_t seed = 0;
};

struct LinearReport {
  std::string module;        // e.g. model.layers.0.self_attn.q_proj
  std::string scheme;        // row applied (after fallback)
  std::string fallback;      // why it differs from the requested scheme, or empty
  int64_t n = 0, k = 0;
  double rel_mse = 0;        // Σ(w − ŵ)² / Σw²
  double snr_db = 0;         // −10·log10(rel_mse)
  double gptq_loss = 0;      // GPTQ objective (0 for RTN)
};

struct QuantizeReport {
  std::vector<LinearReport> linears;
  std::vector<std::string> kept;  // modules left unquantized (ignored)
  int64_t quantized_params = 0;
  int64_t total_params = 0;
  double bits_per_weight = 0;     // of quantized linears, scales and zeros included
  uint64_t output_bytes = 0;
  int64_t calib_samples = 0, calib_tokens = 0;
  bool calib_from_model = false;  // no --calib: windows sampled from the model itself
  // Time breakdown: calibration data, forward passes over it, Hessians, solving/rounding, write.
  double seconds_calib_data = 0, seconds_forward = 0, seconds_statistics = 0;
  double seconds_quantize = 0, seconds_write = 0;
  int64_t peak_rss_bytes = 0;
};

using LayerProgress = std::function<void(int64_t done, int64_t total)>;

Result<QuantizeReport> QuantizeModel(const std::filesystem::path& src,
                                     const std::filesystem::path& out,
                                     const QuantizeOptions& opt,
                                     const LayerProgress& progress = {});

}  // namespace qf::methods
