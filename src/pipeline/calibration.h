// Calibration data for the methods that need activations (GPTQ, AWQ, SmoothQuant): random
// windows of a tokenized text (GPTQ's sampling), or, without a text, token sequences sampled
// from the model itself. Contract: the same text/model, options and seed give the same windows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/result.h"
#include "model/model.h"
#include "text/tokenizer.h"

namespace qf::pipeline {

struct CalibrationOptions {
  std::string text_path;  // empty: sample from the model
  int64_t nsamples = 128;
  int64_t seqlen = 512;  // capped at the model's context by the caller
  uint64_t seed = 0;
};

// nsamples windows of seqlen tokens. From text: the file tokenized whole without BOS, window
// starts drawn uniformly from [0, tokens − seqlen]; needs `tok`. From the model: BOS (the
// tokenizer's, else config.json's) then tokens sampled at temperature 1 (top-k/p off); needs
// `model`, `tok` may be null.
Result<std::vector<std::vector<int32_t>>> CalibrationWindows(const text::Tokenizer* tok,
                                                             const model::Model* model,
                                                             const CalibrationOptions& opt);

}  // namespace qf::pipeline
