// Windowed perplexity and KL divergence (exact: log-sum-exp accumulated in double).
// Windows are independent, so with at least as many windows as threads each thread runs whole
// windows on single-threaded kernels (better scaling than splitting each GEMM); per-token
// results are reduced in window order, so figures do not depend on the thread count.
// kLlamaCpp runs each window's context half without logits, then the scored half with them.
// Base-logits files are written in window order (an ordered section after the parallel work).
#include "eval/perplexity.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>

#include "core/dist.h"
#include "core/mmap.h"
#include "io/safetensors_writer.h"
#include "pipeline/gguf_convert.h"
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
  std::vector<int32_t> tokens;  // the window as fed (BOS first for kLlamaCpp)
  std::vector<model::KVCache> caches;
  std::vector<std::vector<float>> logits;  // per model [ctx − first, V]: positions first..ctx−1
  std::vector<std::byte> records;          // the window's base-logits records when saving
  std::vector<double> logp, p;             // decoded base distribution [V]
};

struct NoSink {
  Status operator()(int64_t, const WindowWorker&) const { return Status::Ok(); }
};

// Every rank's windows of window-indexed results (each `windows` rows of equal size), on every
// rank.
template <class... T>
void GatherWindows(int64_t windows, std::vector<T>&... v) {
  (dist::AllGatherRows(v, windows, 1), ...);
}

// Calls fn(window, worker) -> Status for each window, with the logits of every model in
// worker.logits; with kOrdered, then sink(window, worker) -> Status in window order.
// fn must only write results indexed by window.
template <bool kOrdered, class Fn, class Sink>
Status ForEachWindow(const std::vector<const model::Model*>& models, const int32_t* tokens,
                     int64_t windows, const WindowOptions& opt, const ProgressFn& progress, Fn fn,
                     Sink sink) {
  const int64_t ctx = opt.ctx, first = FirstScored(opt);
  // Under mpirun each rank runs its share of the windows (callers gather the results by window:
  // GatherWindows); the ordered sink sees this rank's windows in order.
  const auto [w0, w1] = dist::Share(windows);
  const int threads = std::max(1, omp_get_max_threads());
  const bool window_parallel = threads > 1 && (w1 - w0) >= threads;
  const int workers = window_parallel ? threads : 1;
  std::atomic<int64_t> done{0};
  std::atomic<bool> failed{false};
  std::optional<Error> error;
  auto fail = [&](const Status& st) {
#pragma omp critical(qf_window_error)
    if (!error) error = st.error();
    failed = true;
  };
#pragma omp parallel num_threads(workers) if (window_parallel)
  {
    WindowWorker w;
    w.tokens.resize(static_cast<size_t>(ctx));
    for (const model::Model* m : models) {
      w.caches.push_back(m->NewCache(ctx));
      w.logits.emplace_back(static_cast<size_t>((ctx - first) * m->config().vocab_size));
    }
    auto run = [&](int64_t win) -> Status {
      std::copy(tokens + win * ctx, tokens + (win + 1) * ctx, w.tokens.begin());
      if (opt.scoring == Scoring::kLlamaCpp && opt.bos_id >= 0) w.tokens[0] = opt.bos_id;
      for (size_t i = 0; i < models.size(); ++i) {
        w.caches[i].Clear();
        if (first > 0)  // context only: just the last position's logits, overwritten below
          QF_TRY(models[i]->Forward({w.tokens.data(), size_t(first)}, w.caches[i],
                                    w.logits[i].data(), /*all_logits=*/false));
        QF_TRY(models[i]->Forward({w.tokens.data() + first, size_t(ctx - first)}, w.caches[i],
                                  w.logits[i].data(), /*all_logits=*/true));
      }
      return fn(win, w);
    };
    auto report = [&] {
      const int64_t d = ++done;
      if (progress && omp_get_thread_num() == 0) progress(d, windows);
    };
    if constexpr (kOrdered) {
#pragma omp for schedule(dynamic, 1) ordered
      for (int64_t win = w0; win < w1; ++win) {
        if (!failed) {
          const Status st = run(win);
          if (!st.ok()) fail(st);
        }
#pragma omp ordered
        {
          if (!failed) {
            const Status st = sink(win, w);
            if (!st.ok()) fail(st);
          }
        }
        report();
      }
    } else {
#pragma omp for schedule(dynamic, 1)
      for (int64_t win = w0; win < w1; ++win) {
        if (failed) continue;
        const Status st = run(win);
        if (!st.ok()) fail(st);
        report();
      }
    }
  }
  if (error) return *error;
  if (progress) progress(windows, windows);
  return Status::Ok();
}

// NLL of each of the n scored tokens: logits rows [n, V], row i predicting toks[i + 1].
void WindowNll(const float* logits, const int32_t* toks, int64_t n, int64_t V, double* nll) {
  for (int64_t i = 0; i < n; ++i) {
    const float* row = logits + i * V;
    nll[i] = kernels::LogSumExp(row, V) - double(row[toks[i + 1]]);
  }
}

BaseLogitsInfo MakeInfo(const WindowOptions& opt, int64_t vocab, int64_t windows,
                        const std::vector<int32_t>& tokens) {
  BaseLogitsInfo h;
  h.scoring = static_cast<uint32_t>(opt.scoring);
  h.vocab = vocab;
  h.ctx = opt.ctx;
  h.windows = windows;
  h.scored_per_window = ScoredPerWindow(opt);
  h.first_scored = FirstScored(opt);
  h.text_tokens = int64_t(tokens.size());
  h.tokens_hash = HashTokens(tokens);
  h.bos_id = opt.scoring == Scoring::kLlamaCpp ? opt.bos_id : -1;
  return h;
}

// The saved base logits, window by window in window order. Under mpirun rank 0 writes its own
// windows as they come, every other rank keeps its windows in a scratch file (unlinked, beside
// the output) and Finish sends them to rank 0 in rank order: the single process's file.
class RecordSink {
 public:
  static Result<RecordSink> Create(const std::filesystem::path& path, const BaseLogitsInfo& info) {
    RecordSink s;
    s.window_bytes_ = size_t(info.scored_per_window) * BaseLogitsRecordBytes(info.vocab);
    s.windows_ = info.windows;
    if (dist::IsRoot()) {
      QF_ASSIGN(BaseLogitsWriter w, BaseLogitsWriter::Create(path, info));
      s.writer_.emplace(std::move(w));
    } else {
      const std::filesystem::path dir =
          path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
      QF_ASSIGN(io::TensorSpill sp, io::TensorSpill::Create(dir));
      s.spill_.emplace(std::move(sp));
    }
    return s;
  }
  // The next window of this rank's share (ForEachWindow's ordered sink).
  Status Add(const WindowWorker& w) {
    if (writer_) return writer_->WriteWindow(w.records);
    return spill_->Add("w", DType::kU8, {int64_t(w.records.size())}, w.records);
  }
  // After every rank's windows: the other ranks' windows to rank 0, then the file.
  Status Finish() {
    if (!writer_) {
      QF_ASSIGN(const std::vector<io::TensorToWrite> mine, spill_->Tensors());
      for (const io::TensorToWrite& t : mine) dist::Send(t.data, 0);
      return Status::Ok();
    }
    std::vector<std::byte> buf(window_bytes_);
    for (int r = 1; r < dist::Size(); ++r) {
      const auto [w0, w1] = dist::ShareOf(r, windows_);
      for (int64_t win = w0; win < w1; ++win) {
        dist::Recv(buf, r);
        QF_TRY(writer_->WriteWindow(buf));
      }
    }
    return writer_->Finish();
  }

 private:
  size_t window_bytes_ = 0;
  int64_t windows_ = 0;
  std::optional<BaseLogitsWriter> writer_;
  std::optional<io::TensorSpill> spill_;
};

// Encodes the window's n scored rows of base logits (nll: their exact NLLs) into w.records.
void EncodeWindow(const float* logits, const double* nll, int64_t n, int64_t V, WindowWorker& w) {
  const size_t rec = BaseLogitsRecordBytes(V);
  w.records.resize(static_cast<size_t>(n) * rec);
  for (int64_t i = 0; i < n; ++i) EncodeBaseRecord(logits + i * V, V, nll[i], &w.records[i * rec]);
}

void FillTiming(PplResult& p, int64_t windows, int64_t ctx, double secs, int64_t passes) {
  p.windows = windows;
  p.evaluated_tokens = windows * ctx;
  p.seconds = secs;
  p.tokens_per_second = double(passes * windows * ctx) / std::max(secs, 1e-9);
}

// Mean/stderr/median/p99/max of the per-token KLDs, top-1 agreement and both PPLs.
KldResult Summarize(std::vector<float>& kld, const std::vector<double>& nll_b,
                    const std::vector<double>& nll_o, const std::vector<char>& same,
                    Scoring scoring) {
  KldResult r;
  const int64_t n = int64_t(kld.size());
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
  r.kld_stderr =
      n > 1 ? std::sqrt(std::max(0.0, sum_sq / double(n) - r.kld_mean * r.kld_mean) / double(n - 1))
            : 0.0;
  r.top1_agreement = double(agree) / double(n);
  std::sort(kld.begin(), kld.end());
  const size_t un = size_t(n);
  r.kld_median = un % 2 ? kld[un / 2] : 0.5 * (double(kld[un / 2 - 1]) + kld[un / 2]);
  if (scoring == Scoring::kLlamaCpp) {  // llama.cpp's percentile(): linear interpolation
    const double pos = 0.99 * double(un - 1);
    const size_t ip = size_t(pos);
    const double frac = pos - double(ip);
    r.kld_p99 = (1 - frac) * kld[ip] + frac * kld[std::min(ip + 1, un - 1)];
  } else {
    r.kld_p99 = kld[std::min(un - 1, size_t(std::ceil(0.99 * double(un))) - 1)];
  }
  r.kld_max = kld.back();
  return r;
}

}  // namespace

const char* ScoringName(Scoring s) { return s == Scoring::kLlamaCpp ? "llama.cpp" : "qforge"; }

int64_t FirstScored(const WindowOptions& opt) {
  return FirstScoredRow(static_cast<uint32_t>(opt.scoring), opt.ctx);
}
int64_t ScoredPerWindow(const WindowOptions& opt) { return opt.ctx - 1 - FirstScored(opt); }

Result<bool> LlamaCppAddsBos(const std::filesystem::path& model_dir, const text::Tokenizer& tok) {
  if (tok.bos_id() < 0) return false;
  QF_ASSIGN(const pipeline::VocabBos v, pipeline::LlamaCppVocabBos(model_dir));
  return v.add;
}

std::vector<int32_t> TokenizeForScoring(const text::Tokenizer& tok, std::string text,
                                        Scoring scoring, bool add_bos) {
  if (scoring == Scoring::kQforge) return tok.Encode(text, /*add_bos=*/false);
  if (!text.empty() && text.back() == '\n') text.pop_back();  // as llama.cpp's -f
  return tok.Encode(text, add_bos);
}

Result<int64_t> CountWindows(int64_t n_tokens, const WindowOptions& opt, int64_t model_ctx) {
  const bool llama = opt.scoring == Scoring::kLlamaCpp;
  if (opt.ctx < (llama ? 3 : 2))
    return Err("--ctx must be at least {}{}, got {}", llama ? 3 : 2,
               llama ? " with llama.cpp scoring" : "", opt.ctx);
  if (opt.ctx > model_ctx)
    return Err("--ctx {} exceeds the model's context length {}", opt.ctx, model_ctx);
  if (opt.max_windows < 0) return Err("--max-windows must be non-negative");
  if (llama && n_tokens < 2 * opt.ctx)
    return Err("text has {} tokens; llama.cpp scoring needs at least 2·ctx = {}", n_tokens,
               2 * opt.ctx);
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
  const int64_t V = model.config().vocab_size, per = ScoredPerWindow(opt), first = FirstScored(opt);
  std::vector<double> nll(static_cast<size_t>(windows * per));
  double* nll_out = nll.data();
  const auto t0 = Clock::now();
  QF_TRY(ForEachWindow<false>(
      {&model}, tokens.data(), windows, opt, progress,
      [&](int64_t win, WindowWorker& w) {
        WindowNll(w.logits[0].data(), w.tokens.data() + first, per, V, nll_out + win * per);
        return Status::Ok();
      },
      NoSink{}));
  GatherWindows(windows, nll);
  PplResult r;
  FillTiming(r, windows, opt.ctx, std::chrono::duration<double>(Clock::now() - t0).count(), 1);
  NllStats stats;
  for (double v : nll) stats.Add(v);
  stats.Fill(r);
  return r;
}

Result<KldResult> KlDivergence(const model::Model& base, const model::Model& other,
                               const std::vector<int32_t>& tokens, const WindowOptions& opt,
                               const ProgressFn& progress,
                               const std::filesystem::path& save_base_logits) {
  const int64_t V = base.config().vocab_size;
  if (other.config().vocab_size != V)
    return Err("models have different vocabularies ({} vs {})", V, other.config().vocab_size);
  const int64_t model_ctx = std::min(base.config().max_position, other.config().max_position);
  QF_ASSIGN(const int64_t windows, CountWindows(int64_t(tokens.size()), opt, model_ctx));
  const int64_t per = ScoredPerWindow(opt), first = FirstScored(opt), n = windows * per;
  std::vector<float> kld(static_cast<size_t>(n));
  std::vector<double> nll_b(static_cast<size_t>(n)), nll_o(static_cast<size_t>(n));
  std::vector<char> same(static_cast<size_t>(n));
  float* kld_out = kld.data();
  double *nll_b_out = nll_b.data(), *nll_o_out = nll_o.data();
  char* same_out = same.data();
  const bool save = !save_base_logits.empty();
  const auto t0 = Clock::now();
  auto fn = [&](int64_t win, WindowWorker& w) {
    const int32_t* toks = w.tokens.data() + first;
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
    if (save) EncodeWindow(w.logits[0].data(), nll_b_out + win * per, per, V, w);
    return Status::Ok();
  };
  if (save) {
    QF_ASSIGN(RecordSink sink,
              RecordSink::Create(save_base_logits, MakeInfo(opt, V, windows, tokens)));
    QF_TRY(ForEachWindow<true>({&base, &other}, tokens.data(), windows, opt, progress, fn,
                               [&](int64_t, const WindowWorker& w) { return sink.Add(w); }));
    QF_TRY(sink.Finish());
  } else {
    QF_TRY(
        ForEachWindow<false>({&base, &other}, tokens.data(), windows, opt, progress, fn, NoSink{}));
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  GatherWindows(windows, kld, nll_b, nll_o, same);
  KldResult r = Summarize(kld, nll_b, nll_o, same, opt.scoring);
  for (PplResult* p : {&r.base, &r.other}) FillTiming(*p, windows, opt.ctx, secs, 2);
  return r;
}

Result<PplResult> SaveBaseLogits(const model::Model& base, const std::vector<int32_t>& tokens,
                                 const WindowOptions& opt, const std::filesystem::path& path,
                                 const ProgressFn& progress) {
  QF_ASSIGN(const int64_t windows,
            CountWindows(int64_t(tokens.size()), opt, base.config().max_position));
  const int64_t V = base.config().vocab_size, per = ScoredPerWindow(opt), first = FirstScored(opt);
  std::vector<double> nll(static_cast<size_t>(windows * per));
  double* nll_out = nll.data();
  QF_ASSIGN(RecordSink sink, RecordSink::Create(path, MakeInfo(opt, V, windows, tokens)));
  const auto t0 = Clock::now();
  QF_TRY(ForEachWindow<true>(
      {&base}, tokens.data(), windows, opt, progress,
      [&](int64_t win, WindowWorker& w) {
        double* out = nll_out + win * per;
        WindowNll(w.logits[0].data(), w.tokens.data() + first, per, V, out);
        EncodeWindow(w.logits[0].data(), out, per, V, w);
        return Status::Ok();
      },
      [&](int64_t, const WindowWorker& w) { return sink.Add(w); }));
  QF_TRY(sink.Finish());
  GatherWindows(windows, nll);
  PplResult r;
  FillTiming(r, windows, opt.ctx, std::chrono::duration<double>(Clock::now() - t0).count(), 1);
  NllStats stats;
  for (double v : nll) stats.Add(v);
  stats.Fill(r);
  return r;
}

Result<KldResult> KlDivergence(const BaseLogitsReader& base, const model::Model& other,
                               const std::vector<int32_t>& tokens, const WindowOptions& opt,
                               const ProgressFn& progress) {
  const int64_t V = other.config().vocab_size;
  QF_ASSIGN(const int64_t windows,
            CountWindows(int64_t(tokens.size()), opt, other.config().max_position));
  QF_TRY(base.CheckMatches(MakeInfo(opt, V, windows, tokens), windows));
  const int64_t per = ScoredPerWindow(opt), first = FirstScored(opt), n = windows * per;
  const size_t rec_bytes = BaseLogitsRecordBytes(V);
  std::vector<float> kld(static_cast<size_t>(n));
  std::vector<double> nll_b(static_cast<size_t>(n)), nll_o(static_cast<size_t>(n));
  std::vector<char> same(static_cast<size_t>(n));
  float* kld_out = kld.data();
  double *nll_b_out = nll_b.data(), *nll_o_out = nll_o.data();
  char* same_out = same.data();
  const auto t0 = Clock::now();
  QF_TRY(ForEachWindow<false>(
      {&other}, tokens.data(), windows, opt, progress,
      [&](int64_t win, WindowWorker& w) -> Status {
        QF_ASSIGN(const std::byte* records, base.Window(win));
        w.logp.resize(static_cast<size_t>(V));
        w.p.resize(static_cast<size_t>(V));
        const int32_t* toks = w.tokens.data() + first;
        for (int64_t i = 0; i < per; ++i) {
          const DecodedRecord d =
              DecodeBaseRecord(records + size_t(i) * rec_bytes, V, w.logp.data(), w.p.data());
          const float* o = w.logits[0].data() + i * V;
          const double lse_o = kernels::LogSumExp(o, V);
          double kl = 0;
          for (int64_t j = 0; j < V; ++j) kl += w.p[j] * (w.logp[j] - (double(o[j]) - lse_o));
          const size_t at = size_t(win * per + i);
          kld_out[at] = float(std::max(0.0, kl));
          same_out[at] = d.argmax == (std::max_element(o, o + V) - o);
          nll_b_out[at] = d.nll;
          nll_o_out[at] = lse_o - double(o[toks[i + 1]]);
        }
        return Status::Ok();
      },
      NoSink{}));
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  GatherWindows(windows, kld, nll_b, nll_o, same);
  KldResult r = Summarize(kld, nll_b, nll_o, same, opt.scoring);
  FillTiming(r.other, windows, opt.ctx, secs, 1);
  r.base.windows = windows;  // from the file: nothing run now
  return r;
}

}  // namespace qf::eval
