// `qforge ppl` and `qforge kld`: perplexity and KL divergence over windows of a text file.
#include <cstdio>

#include "common.h"
#include "core/progress.h"
#include "eval/perplexity.h"

namespace qf::cli {
namespace {

struct EvalArgs {
  std::string model, other, text;
  eval::WindowOptions win;
  CommonOptions common;
};

void AddWindowOptions(CLI::App* cmd, EvalArgs* a) {
  cmd->add_option("--text", a->text, "text file to score (e.g. wiki.test.raw)")->required();
  cmd->add_option("-c,--ctx", a->win.ctx, "window length in tokens")->capture_default_str();
  cmd->add_option("--max-windows", a->win.max_windows, "score at most N windows (0 = all)");
  AddCommonOptions(cmd, &a->common);
}

nlohmann::json PplJson(const eval::PplResult& r) {
  return {{"ppl", r.ppl},
          {"ppl_stderr", r.ppl_stderr},
          {"mean_nll", r.mean_nll},
          {"windows", r.windows},
          {"scored_tokens", r.scored_tokens},
          {"evaluated_tokens", r.evaluated_tokens},
          {"seconds", r.seconds},
          {"tokens_per_second", r.tokens_per_second}};
}

int RunPpl(const EvalArgs& a) {
  const int threads = ApplyThreads(a.common);
  auto lm = LoadModelAndTokenizer(a.model);
  if (!lm.ok()) return Fail(lm.error());
  auto tokens = TokenizeFile(*lm->tokenizer, a.text);
  if (!tokens.ok()) return Fail(tokens.error());
  auto windows = eval::CountWindows(int64_t(tokens->size()), a.win, lm->model.config().max_position);
  if (!windows.ok()) return Fail(windows.error().Context(a.text));
  ProgressBar pb("ppl", *windows, ShowProgress(a.common));
  auto r = eval::Perplexity(lm->model, *tokens, a.win,
                            [&](int64_t d, int64_t) { pb.Update(d); });
  pb.Finish();
  if (!r.ok()) return Fail(r.error());
  if (a.common.json) {
    nlohmann::json j = PplJson(*r);
    j["model"] = a.model;
    j["text"] = a.text;
    j["ctx"] = a.win.ctx;
    j["text_tokens"] = tokens->size();
    j["threads"] = threads;
    PrintJson(j);
  } else {
    std::printf("PPL = %.4f +/- %.4f  (%lld windows of %lld, %lld tokens scored)\n", r->ppl,
                r->ppl_stderr, (long long)r->windows, (long long)a.win.ctx,
                (long long)r->scored_tokens);
    std::printf("%.1f tokens/s over %.2f s on %d threads\n", r->tokens_per_second, r->seconds,
                threads);
  }
  return 0;
}

int RunKld(const EvalArgs& a) {
  const int threads = ApplyThreads(a.common);
  auto base = LoadModelAndTokenizer(a.model);
  if (!base.ok()) return Fail(base.error());
  auto other = LoadModelAndTokenizer(a.other);
  if (!other.ok()) return Fail(other.error());
  auto tokens = TokenizeFile(*base->tokenizer, a.text);
  if (!tokens.ok()) return Fail(tokens.error());
  const int64_t ctx_limit =
      std::min(base->model.config().max_position, other->model.config().max_position);
  auto windows = eval::CountWindows(int64_t(tokens->size()), a.win, ctx_limit);
  if (!windows.ok()) return Fail(windows.error().Context(a.text));
  ProgressBar pb("kld", *windows, ShowProgress(a.common));
  auto r = eval::KlDivergence(base->model, other->model, *tokens, a.win,
                              [&](int64_t d, int64_t) { pb.Update(d); });
  pb.Finish();
  if (!r.ok()) return Fail(r.error());
  if (a.common.json) {
    nlohmann::json j = {{"base", a.model},
                        {"other", a.other},
                        {"text", a.text},
                        {"ctx", a.win.ctx},
                        {"threads", threads},
                        {"kld_mean", r->kld_mean},
                        {"kld_stderr", r->kld_stderr},
                        {"kld_median", r->kld_median},
                        {"kld_p99", r->kld_p99},
                        {"kld_max", r->kld_max},
                        {"top1_agreement", r->top1_agreement},
                        {"base_ppl", PplJson(r->base)},
                        {"other_ppl", PplJson(r->other)}};
    PrintJson(j);
  } else {
    std::printf("windows %lld of %lld tokens, %lld tokens scored\n", (long long)r->base.windows,
                (long long)a.win.ctx, (long long)r->base.scored_tokens);
    std::printf("PPL base  = %.4f +/- %.4f\n", r->base.ppl, r->base.ppl_stderr);
    std::printf("PPL other = %.4f +/- %.4f\n", r->other.ppl, r->other.ppl_stderr);
    std::printf("KLD mean = %.6f +/- %.6f, median %.6f, p99 %.6f, max %.6f\n", r->kld_mean,
                r->kld_stderr, r->kld_median, r->kld_p99, r->kld_max);
    std::printf("top-1 agreement = %.3f%%\n", 100.0 * r->top1_agreement);
  }
  return 0;
}

}  // namespace

void RegisterPpl(CLI::App& app, int* rc) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity of a model on a text file");
  cmd->add_option("model", a->model, "model folder")->required();
  AddWindowOptions(cmd, a.get());
  cmd->callback([a, rc] { *rc = RunPpl(*a); });
}

void RegisterKld(CLI::App& app, int* rc) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "kld", "KL divergence of OTHER's next-token distribution from BASE's, top-1 agreement");
  cmd->add_option("base", a->model, "base model folder")->required();
  cmd->add_option("other", a->other, "model to compare")->required();
  AddWindowOptions(cmd, a.get());
  cmd->callback([a, rc] { *rc = RunKld(*a); });
}

}  // namespace qf::cli
