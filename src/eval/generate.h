// Text generation: the decode loop over the KV cache with a seeded sampler (model/sampler.h).
// Contract: the same seed and options give the same tokens on any machine.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/result.h"
#include "model/model.h"
#include "model/sampler.h"

namespace qf::eval {

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
};

// Runs the prompt, then samples up to n tokens (stopping after eos_id when >= 0), calling
// on_token for each new token as it is produced. The prompt plus n tokens must fit the context.
Result<GenerateStats> Generate(const model::Model& model, const std::vector<int32_t>& prompt,
                               int64_t n, const model::SamplingOptions& opt, int64_t eos_id,
                               const std::function<void(int32_t)>& on_token);

}  // namespace qf::eval
