// The generation loop (see generate.h).
#include "eval/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>

namespace qf::eval {

Result<GenerateStats> Generate(const model::Model& model, const std::vector<int32_t>& prompt,
                               int64_t n, const model::SamplingOptions& opt, int64_t eos_id,
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
  model::Sampler sampler(opt);
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
