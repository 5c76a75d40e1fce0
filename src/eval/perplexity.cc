// Windowed perplexity and KL divergence (exact: log-sum-exp accumulated in double).
#include "eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "kernels/ops.h"

namespace qf::eval {
namespace {

using Clock = std::chrono::steady_clock;

// Accumulates per-token negative log-likelihoods.
struct NllStats {
  double sum = 0, sum_sq = 0;
  int64_t n = 0;
  void Add(double nll) {
    sum += nll;
    sum_sq += nll * nll;
    ++n;
  }
  void Fill(PplResult& r) const {
    r.scored_tokens = n;
    r.mean_nll = n ? sum / double(n) : 0.0;
    r.ppl = std::exp(r.mean_nll);
    const double var = n > 1 ? std::max(0.0, (sum_sq / double(n) - r.mean_nll * r.mean_nll)) *
                                   double(n) / double(n - 1)
                             : 0.0;
    r.ppl_stderr = r.ppl * std::sqrt(var / double(std::max<int64_t>(n, 1)));
  }
};

// Runs one window and returns its logits [ctx, V].
Status WindowLogits(const model::Model& model, model::KVCache& cache, const int32_t* tokens,
                    int64_t ctx, std::vector<float>& logits) {
  logits.resize(size_t(ctx * model.config().vocab_size));
  cache.Clear();
  return model.Forward({tokens, size_t(ctx)}, cache, logits.data(), /*all_logits=*/true);
}

}  // namespace

Result<int64_t> CountWindows(int64_t n_tokens, const WindowOptions& opt, int64_t model_ctx) {
  if (opt.ctx < 2) return Err("--ctx must be at least 2, got {}", opt.ctx);
  if (opt.ctx > model_ctx)
    return Err("--ctx {} exceeds the model's context length {}", opt.ctx, model_ctx);
  if (opt.max_windows < 0) return Err("--max-windows must be non-negative");
  int64_t windows = n_tokens / opt.ctx;
  if (windows == 0)
    return Err("text has {} tokens, shorter than one window of {} tokens", n_tokens, opt.ctx);
  if (opt.max_windows > 0) windows = std::min(windows, opt.max_windows);
  return windows;
}

Result<PplResult> Perplexity(const model::Model& model, const std::vector<int32_t>& tokens,
                             const WindowOptions& opt, const ProgressFn& progress) {
  QF_ASSIGN(const int64_t windows,
            CountWindows(int64_t(tokens.size()), opt, model.config().max_position));
  const int64_t V = model.config().vocab_size, ctx = opt.ctx;
  model::KVCache cache = model.NewCache(ctx);
  std::vector<float> logits;
  std::vector<double> nll(size_t(ctx - 1));
  NllStats stats;
  const auto t0 = Clock::now();
  for (int64_t w = 0; w < windows; ++w) {
    const int32_t* win = tokens.data() + w * ctx;
    QF_TRY(WindowLogits(model, cache, win, ctx, logits));
#pragma omp parallel for
    for (int64_t i = 0; i < ctx - 1; ++i) {
      const float* row = logits.data() + i * V;
      nll[size_t(i)] = kernels::LogSumExp(row, V) - double(row[win[i + 1]]);
    }
    for (double v : nll) stats.Add(v);
    if (progress) progress(w + 1, windows);
  }
  PplResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.windows = windows;
  r.evaluated_tokens = windows * ctx;
  r.tokens_per_second = double(r.evaluated_tokens) / std::max(r.seconds, 1e-9);
  stats.Fill(r);
  return r;
}

Result<KldResult> KlDivergence(const model::Model& base, const model::Model& other,
                               const std::vector<int32_t>& tokens, const WindowOptions& opt,
                               const ProgressFn& progress) {
  const int64_t V = base.config().vocab_size;
  if (other.config().vocab_size != V)
    return Err("models have different vocabularies ({} vs {})", V, other.config().vocab_size);
  const int64_t model_ctx = std::min(base.config().max_position, other.config().max_position);
  QF_ASSIGN(const int64_t windows, CountWindows(int64_t(tokens.size()), opt, model_ctx));
  const int64_t ctx = opt.ctx;
  model::KVCache cache_b = base.NewCache(ctx), cache_o = other.NewCache(ctx);
  std::vector<float> lb, lo;
  std::vector<float> kld;
  kld.reserve(size_t(windows * (ctx - 1)));
  std::vector<double> row_kld(size_t(ctx - 1)), nll_b(size_t(ctx - 1)), nll_o(size_t(ctx - 1));
  std::vector<char> same(size_t(ctx - 1));
  NllStats sb, so;
  int64_t agree = 0;
  const auto t0 = Clock::now();
  for (int64_t w = 0; w < windows; ++w) {
    const int32_t* win = tokens.data() + w * ctx;
    QF_TRY(WindowLogits(base, cache_b, win, ctx, lb));
    QF_TRY(WindowLogits(other, cache_o, win, ctx, lo));
#pragma omp parallel for
    for (int64_t i = 0; i < ctx - 1; ++i) {
      const float* b = lb.data() + i * V;
      const float* o = lo.data() + i * V;
      const double lse_b = kernels::LogSumExp(b, V), lse_o = kernels::LogSumExp(o, V);
      double kl = 0;
      for (int64_t j = 0; j < V; ++j) {
        const double lpb = double(b[j]) - lse_b, lpo = double(o[j]) - lse_o;
        kl += std::exp(lpb) * (lpb - lpo);
      }
      row_kld[size_t(i)] = std::max(0.0, kl);
      same[size_t(i)] = (std::max_element(b, b + V) - b) == (std::max_element(o, o + V) - o);
      nll_b[size_t(i)] = lse_b - double(b[win[i + 1]]);
      nll_o[size_t(i)] = lse_o - double(o[win[i + 1]]);
    }
    for (int64_t i = 0; i < ctx - 1; ++i) {
      kld.push_back(float(row_kld[size_t(i)]));
      agree += same[size_t(i)];
      sb.Add(nll_b[size_t(i)]);
      so.Add(nll_o[size_t(i)]);
    }
    if (progress) progress(w + 1, windows);
  }
  KldResult r;
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  for (PplResult* p : {&r.base, &r.other}) {
    p->windows = windows;
    p->evaluated_tokens = windows * ctx;
    p->seconds = secs;
    p->tokens_per_second = double(2 * windows * ctx) / std::max(secs, 1e-9);
  }
  sb.Fill(r.base);
  so.Fill(r.other);
  const size_t n = kld.size();
  double sum = 0, sum_sq = 0;
  for (float v : kld) {
    sum += v;
    sum_sq += double(v) * v;
  }
  r.kld_mean = sum / double(n);
  r.kld_stderr = n > 1 ? std::sqrt(std::max(0.0, sum_sq / double(n) - r.kld_mean * r.kld_mean) /
                                   double(n - 1))
                       : 0.0;
  r.top1_agreement = double(agree) / double(n);
  std::sort(kld.begin(), kld.end());
  r.kld_median = n % 2 ? kld[n / 2] : 0.5 * (double(kld[n / 2 - 1]) + kld[n / 2]);
  r.kld_p99 = kld[std::min(n - 1, size_t(std::ceil(0.99 * double(n))) - 1)];
  r.kld_max = kld.back();
  return r;
}

}  // namespace qf::eval
