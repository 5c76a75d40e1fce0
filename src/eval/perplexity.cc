// Windowed perplexity and KL divergence (exact: log-sum-exp accumulated in double).
// Windows are independent, so with at least as many windows as threads each thread runs whole
// windows on single-threaded kernels (better scaling than splitting each GEMM); per-token
// results are reduced in window order, so figures do not depend on the thread count.
#include "eval/perplexity.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>

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

// Per-thread buffers for running windows of `models`.
struct WindowWorker {
  std::vector<model::KVCache> caches;
  std::vector<std::vector<float>> logits;  // per model [ctx, V]
};

// Calls fn(window, worker) for each window, returning logits of every model in worker.logits.
// fn must only write results indexed by window.
template <class Fn>
Status ForEachWindow(const std::vector<const model::Model*>& models, const int32_t* tokens,
                     int64_t windows, int64_t ctx, const ProgressFn& progress, Fn fn) {
  const int threads = kernels::Threads();
  const bool window_parallel = threads > 1 && windows >= threads;
  const int workers = window_parallel ? threads : 1;
  std::atomic<int64_t> done{0};
  std::optional<Error> error;
#pragma omp parallel num_threads(workers) if (window_parallel)
  {
    WindowWorker w;
    for (const model::Model* m : models) {
      w.caches.push_back(m->NewCache(ctx));
      w.logits.emplace_back(size_t(ctx * m->config().vocab_size));
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t win = 0; win < windows; ++win) {
      Status st;
      for (size_t i = 0; i < models.size() && st.ok(); ++i) {
        w.caches[i].Clear();
        st = models[i]->Forward({tokens + win * ctx, size_t(ctx)}, w.caches[i],
                                w.logits[i].data(), /*all_logits=*/true);
      }
      if (!st.ok()) {
#pragma omp critical(qf_window_error)
        if (!error) error = st.error();
        continue;
      }
      fn(win, w);
      const int64_t d = ++done;
      if (progress && omp_get_thread_num() == 0) progress(d, windows);
    }
  }
  if (error) return *error;
  if (progress) progress(windows, windows);
  return Status::Ok();
}

// NLL of each scored token of one window's logits [ctx, V].
void WindowNll(const float* logits, const int32_t* win, int64_t ctx, int64_t V, double* nll) {
  for (int64_t i = 0; i < ctx - 1; ++i) {
    const float* row = logits + i * V;
    nll[i] = kernels::LogSumExp(row, V) - double(row[win[i + 1]]);
  }
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
  std::vector<double> nll(size_t(windows * (ctx - 1)));
  double* nll_out = nll.data();
  const auto t0 = Clock::now();
  QF_TRY(ForEachWindow({&model}, tokens.data(), windows, ctx, progress,
                       [&](int64_t win, const WindowWorker& w) {
                         WindowNll(w.logits[0].data(), tokens.data() + win * ctx, ctx, V,
                                   nll_out + win * (ctx - 1));
                       }));
  PplResult r;
  r.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  r.windows = windows;
  r.evaluated_tokens = windows * ctx;
  r.tokens_per_second = double(r.evaluated_tokens) / std::max(r.seconds, 1e-9);
  NllStats stats;
  for (double v : nll) stats.Add(v);
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
  const int64_t ctx = opt.ctx, per = ctx - 1, n = windows * per;
  std::vector<float> kld(static_cast<size_t>(n));
  std::vector<double> nll_b(static_cast<size_t>(n)), nll_o(static_cast<size_t>(n));
  std::vector<char> same(static_cast<size_t>(n));
  float* kld_out = kld.data();
  double *nll_b_out = nll_b.data(), *nll_o_out = nll_o.data();
  char* same_out = same.data();
  const auto t0 = Clock::now();
  QF_TRY(ForEachWindow(
      {&base, &other}, tokens.data(), windows, ctx, progress,
      [&](int64_t win, const WindowWorker& w) {
        const int32_t* toks = tokens.data() + win * ctx;
        for (int64_t i = 0; i < per; ++i) {
          const float* b = w.logits[0].data() + i * V;
          const float* o = w.logits[1].data() + i * V;
          const double lse_b = kernels::LogSumExp(b, V), lse_o = kernels::LogSumExp(o, V);
          double kl = 0;
          for (int64_t j = 0; j < V; ++j) {
            const double lpb = double(b[j]) - lse_b, lpo = double(o[j]) - lse_o;
            kl += std::exp(lpb) * (lpb - lpo);
          }
          const size_t at = size_t(win * per + i);
          kld_out[at] = float(std::max(0.0, kl));
          same_out[at] = (std::max_element(b, b + V) - b) == (std::max_element(o, o + V) - o);
          nll_b_out[at] = lse_b - double(b[toks[i + 1]]);
          nll_o_out[at] = lse_o - double(o[toks[i + 1]]);
        }
      }));
  KldResult r;
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  for (PplResult* p : {&r.base, &r.other}) {
    p->windows = windows;
    p->evaluated_tokens = windows * ctx;
    p->seconds = secs;
    p->tokens_per_second = double(2 * windows * ctx) / std::max(secs, 1e-9);
  }
  NllStats sb, so;
  int64_t agree = 0;
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < n; ++i) {
    sb.Add(nll_b[size_t(i)]);
    so.Add(nll_o[size_t(i)]);
    agree += same[size_t(i)];
    sum += kld[size_t(i)];
    sum_sq += double(kld[size_t(i)]) * kld[size_t(i)];
  }
  sb.Fill(r.base);
  so.Fill(r.other);
  r.kld_mean = sum / double(n);
  r.kld_stderr = n > 1 ? std::sqrt(std::max(0.0, sum_sq / double(n) - r.kld_mean * r.kld_mean) /
                                   double(n - 1))
                       : 0.0;
  r.top1_agreement = double(agree) / double(n);
  std::sort(kld.begin(), kld.end());
  const size_t un = size_t(n);
  r.kld_median = un % 2 ? kld[un / 2] : 0.5 * (double(kld[un / 2 - 1]) + kld[un / 2]);
  r.kld_p99 = kld[std::min(un - 1, size_t(std::ceil(0.99 * double(un))) - 1)];
  r.kld_max = kld.back();
  return r;
}

}  // namespace qf::eval
