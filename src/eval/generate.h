// Text generation: a seeded sampler (greedy, temperature, top-k, top-p) and the decode loop
// over the KV cache. Contract: the same seed and options give the same tokens on any machine.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "core/result.h"
#include "model/model.h"

namespace qf::eval {

struct SamplingOptions {
  float temperature = 0.8f;  // <= 0: greedy
  int64_t top_k = 40;        // <= 0: no limit
  float top_p = 0.95f;       // >= 1: no limit
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opt) : opt_(opt), rng_(opt.seed) {}
  int32_t Sample(const float* logits, int64_t vocab);

 private:
  SamplingOptions opt_;
  std::mt19937_64 rng_;  // fully specified by the standard: portable sequences
};

struct GenerateStats {
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double prompt_seconds = 0;
  double generate_seconds = 0;
};

// Runs the prompt, then samples up to n tokens (stopping after eos_id when >= 0), calling
// on_token for each new token as it is produced. The prompt plus n tokens must fit the context.
Result<GenerateStats> Generate(const model::Model& model, const std::vector<int32_t>& prompt,
                               int64_t n, const SamplingOptions& opt, int64_t eos_id,
                               const std::function<void(int32_t)>& on_token);

}  // namespace qf::eval
