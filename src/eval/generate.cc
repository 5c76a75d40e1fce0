// Sampling and the generation loop.
#include "eval/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

namespace qf::eval {

int32_t Sampler::Sample(const float* logits, int64_t vocab) {
  if (opt_.temperature <= 0.0f) return int32_t(std::max_element(logits, logits + vocab) - logits);
  if ((opt_.top_k <= 0 || opt_.top_k >= vocab) && opt_.top_p >= 1.0f) {
    // Plain temperature sampling: inverse CDF in id order, no sort needed.
    const double mx = *std::max_element(logits, logits + vocab);
    std::vector<double> p(static_cast<size_t>(vocab));
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += p[size_t(i)] = std::exp((double(logits[i]) - mx) / opt_.temperature);
    const double u = double(rng_() >> 11) * 0x1.0p-53 * sum;
    double cum = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      cum += p[size_t(i)];
      if (u < cum) return int32_t(i);
    }
    return int32_t(vocab - 1);
  }
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  // Order by logit, ties by id, so the candidate list is the same everywhere.
  auto before = [&](int32_t a, int32_t b) {
    return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
  };
  const int64_t k = opt_.top_k > 0 ? std::min(opt_.top_k, vocab) : vocab;
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), before);
  idx.resize(size_t(k));
  std::vector<double> p(idx.size());
  const double mx = logits[idx[0]];
  double sum = 0;
  for (size_t i = 0; i < idx.size(); ++i)
    sum += p[i] = std::exp((double(logits[idx[i]]) - mx) / opt_.temperature);
  size_t keep = idx.size();
  if (opt_.top_p < 1.0f) {
    double cum = 0;
    for (size_t i = 0; i < idx.size(); ++i) {
      cum += p[i] / sum;
      if (cum >= opt_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  const double total = std::accumulate(p.begin(), p.begin() + long(keep), 0.0);
  const double u = double(rng_() >> 11) * 0x1.0p-53 * total;
  double cum = 0;
  for (size_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return idx[i];
  }
  return idx[keep - 1];
}

Result<GenerateStats> Generate(const model::Model& model, const std::vector<int32_t>& prompt,
                               int64_t n, const SamplingOptions& opt, int64_t eos_id,
                               const std::function<void(int32_t)>& on_token) {
  using Clock = std::chrono::steady_clock;
  const int64_t ctx = model.config().max_position;
  if (prompt.empty()) return Err("generate: empty prompt");
  if (n < 0) return Err("generate: -n must be non-negative");
  if (int64_t(prompt.size()) + n > ctx)
    return Err("generate: prompt ({} tokens) + {} new tokens exceed the context of {}",
               prompt.size(), n, ctx);
  const int64_t V = model.config().vocab_size;
  model::KVCache cache = model.NewCache(int64_t(prompt.size()) + n);
  std::vector<float> logits(static_cast<size_t>(V));
  Sampler sampler(opt);
  GenerateStats st;
  st.prompt_tokens = int64_t(prompt.size());
  auto t0 = Clock::now();
  QF_TRY(model.Forward(prompt, cache, logits.data(), /*all_logits=*/false));
  auto t1 = Clock::now();
  st.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t tok = sampler.Sample(logits.data(), V);
    on_token(tok);
    ++st.generated_tokens;
    if (tok == eos_id || i + 1 == n) break;
    QF_TRY(model.Forward({&tok, 1}, cache, logits.data(), false));
  }
  st.generate_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return st;
}

}  // namespace qf::eval
