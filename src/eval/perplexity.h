// Perplexity and KL divergence over non-overlapping windows of a token stream.
// Window rule (qforge default, as GPTQ/AWQ): windows of ctx tokens from the start, the tail
// shorter than ctx dropped, every token after the first of each window scored.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "core/result.h"
#include "model/model.h"

namespace qf::eval {

using ProgressFn = std::function<void(int64_t done, int64_t total)>;

struct WindowOptions {
  int64_t ctx = 512;
  int64_t max_windows = 0;  // 0 = all
};

struct PplResult {
  double ppl = 0;
  double ppl_stderr = 0;  // ppl · standard error of the mean NLL
  double mean_nll = 0;
  int64_t windows = 0;
  int64_t scored_tokens = 0;
  int64_t evaluated_tokens = 0;  // tokens run through the model
  double seconds = 0;
  double tokens_per_second = 0;
};

// Number of windows the options give for `n_tokens`, or an Error when there is not one.
Result<int64_t> CountWindows(int64_t n_tokens, const WindowOptions& opt, int64_t model_ctx);

Result<PplResult> Perplexity(const model::Model& model, const std::vector<int32_t>& tokens,
                             const WindowOptions& opt, const ProgressFn& progress = {});

struct KldResult {
  double kld_mean = 0, kld_stderr = 0, kld_median = 0, kld_p99 = 0, kld_max = 0;
  double top1_agreement = 0;  // fraction of scored tokens with equal argmax
  PplResult base, other;
};

// KL(P_base || P_other) per scored token over the same windows, in one pass.
Result<KldResult> KlDivergence(const model::Model& base, const model::Model& other,
                               const std::vector<int32_t>& tokens, const WindowOptions& opt,
                               const ProgressFn& progress = {});

}  // namespace qf::eval
