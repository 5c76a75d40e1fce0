// Seeded next-token sampling (greedy, temperature, top-k, top-p), for generation and for
// calibration text sampled from the model. Contract: the same seed and options give the same
// tokens on any machine (std::mt19937_64 and a total order on candidates).
#pragma once

#include <cstdint>
#include <random>

namespace qf::model {

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

}  // namespace qf::model
