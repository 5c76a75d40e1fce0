// `qforge ppl` and `qforge kld`: perplexity and KL divergence over windows of a text file.
// --scoring qforge (default) or llama.cpp (llama-perplexity's chunks: BOS, second half scored);
// kld can save the base model's log-probabilities (--save-base-logits FILE, with or without
// OTHER) and compare against such a file later without running BASE (--base-logits FILE OTHER).
#include <cstdio>

#include <filesystem>
#include <memory>

#include "common.h"
#include "core/atomic_file.h"
#include "core/mmap.h"
#include "core/progress.h"
#include "core/sysinfo.h"
#include "eval/compare.h"
#include "eval/perplexity.h"

namespace qf::cli {
namespace {

struct EvalArgs {
  std::vector<std::string> models;  // ppl: MODEL; kld: BASE OTHER, BASE alone, or OTHER alone;
                                    // compare: BASE MODEL...
  std::string text, scoring = "qforge", save_base_logits, base_logits;
  eval::WindowOptions win;
  CommonOptions common;
  eval::BenchOptions bench{512, 64, 2, 0};  // compare: -p/-n/-r (0 and 0: no benchmark)
  std::string output;                       // compare: -o PREFIX
};

void AddWindowOptions(CLI::App* cmd, EvalArgs* a) {
  cmd->add_option("--text", a->text, "text file to score (e.g. wiki.test.raw)")->required();
  cmd->add_option("-c,--ctx", a->win.ctx, "window length in tokens")
      ->capture_default_str()
      ->check(IntegerIn(2, kMaxTokens));
  cmd->add_option("--max-windows", a->win.max_windows, "score at most N windows (0 = all)")
      ->check(IntegerIn(0, kNoMax, "0 = all"));
  cmd->add_option("--scoring", a->scoring,
                  "qforge: windows without BOS, every token after the first scored; llama.cpp: "
                  "llama-perplexity's chunks (BOS first, second half scored)")
      ->check(OneOf({"qforge", "llama.cpp"}))
      ->capture_default_str();
  AddCommonOptions(cmd, &a->common);
}

// The window flags together (each alone was checked by its validator).
Status CheckWindowFlags(const EvalArgs& a) {
  if (a.scoring == "llama.cpp" && a.win.ctx < 3)
    return Err(
        "--ctx: {} is out of range with --scoring llama.cpp; allowed: integers >= 3 (BOS "
        "and a scored half)",
        a.win.ctx);
  return Status::Ok();
}

// Tokenizes the text as the scoring mode reads it and fills the BOS of the window options.
Result<std::vector<int32_t>> PrepareTokens(const EvalArgs& a, const std::string& model_dir,
                                           const text::Tokenizer& tok, eval::WindowOptions* win,
                                           bool* add_bos) {
  win->scoring = a.scoring == "llama.cpp" ? eval::Scoring::kLlamaCpp : eval::Scoring::kQforge;
  *add_bos = false;
  if (win->scoring == eval::Scoring::kLlamaCpp) {
    QF_ASSIGN(*add_bos, eval::LlamaCppAddsBos(model_dir, tok));
  }
  win->bos_id = *add_bos ? tok.bos_id() : -1;
  QF_ASSIGN(std::string text, ReadTextFile(a.text));
  return eval::TokenizeForScoring(tok, std::move(text), win->scoring, *add_bos);
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

void AddScoringJson(nlohmann::json& j, const eval::WindowOptions& win, bool add_bos) {
  j["scoring"] = eval::ScoringName(win.scoring);
  if (win.scoring == eval::Scoring::kLlamaCpp) j["add_bos"] = add_bos;
}

const char* WindowWord(const eval::WindowOptions& win) {
  return win.scoring == eval::Scoring::kLlamaCpp ? "chunks" : "windows";
}

int RunPpl(const EvalArgs& a) {
  if (Status st = CheckWindowFlags(a); !st.ok()) return FailFlags(st.error());
  const int threads = ApplyThreads(a.common);
  const std::string& path = a.models.at(0);
  auto lm = LoadModelAndTokenizer(path);
  if (!lm.ok()) return Fail(lm.error());
  eval::WindowOptions win = a.win;
  bool add_bos = false;
  auto tokens = PrepareTokens(a, path, *lm->tokenizer, &win, &add_bos);
  if (!tokens.ok()) return Fail(tokens.error());
  auto windows = eval::CountWindows(int64_t(tokens->size()), win, lm->model.config().max_position);
  if (!windows.ok()) return Fail(windows.error().Context(a.text));
  ProgressBar pb("ppl", *windows, ShowProgress(a.common));
  auto r = eval::Perplexity(lm->model, *tokens, win, [&](int64_t d, int64_t) { pb.Update(d); });
  pb.Finish();
  if (!r.ok()) return Fail(r.error());
  if (a.common.json) {
    nlohmann::json j = PplJson(*r);
    j["model"] = path;
    j["text"] = a.text;
    j["ctx"] = win.ctx;
    j["text_tokens"] = tokens->size();
    j["threads"] = threads;
    AddScoringJson(j, win, add_bos);
    PrintJson(j);
  } else {
    std::printf("PPL = %.4f +/- %.4f  (%lld %s of %lld, %lld tokens scored%s)\n", r->ppl,
                r->ppl_stderr, (long long)r->windows, WindowWord(win), (long long)win.ctx,
                (long long)r->scored_tokens,
                win.scoring == eval::Scoring::kLlamaCpp ? ", llama.cpp scoring" : "");
    std::printf("%.1f tokens/s over %.2f s on %d threads\n", r->tokens_per_second, r->seconds,
                threads);
  }
  return 0;
}

// kld BASE --save-base-logits FILE: runs only BASE and writes its log-probabilities.
int RunSaveOnly(const EvalArgs& a, int threads) {
  const std::string& base_path = a.models[0];
  auto base = LoadModelAndTokenizer(base_path);
  if (!base.ok()) return Fail(base.error());
  eval::WindowOptions win = a.win;
  bool add_bos = false;
  auto tokens = PrepareTokens(a, base_path, *base->tokenizer, &win, &add_bos);
  if (!tokens.ok()) return Fail(tokens.error());
  auto windows =
      eval::CountWindows(int64_t(tokens->size()), win, base->model.config().max_position);
  if (!windows.ok()) return Fail(windows.error().Context(a.text));
  ProgressBar pb("kld base", *windows, ShowProgress(a.common));
  auto r = eval::SaveBaseLogits(base->model, *tokens, win, a.save_base_logits,
                                [&](int64_t d, int64_t) { pb.Update(d); });
  pb.Finish();
  if (!r.ok()) return Fail(r.error());
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(a.save_base_logits, ec);
  if (a.common.json) {
    nlohmann::json j = {{"base", base_path},
                        {"text", a.text},
                        {"ctx", win.ctx},
                        {"threads", threads},
                        {"base_ppl", PplJson(*r)},
                        {"saved_base_logits", a.save_base_logits},
                        {"saved_bytes", ec ? 0 : bytes}};
    AddScoringJson(j, win, add_bos);
    PrintJson(j);
  } else {
    std::printf("PPL base  = %.4f +/- %.4f  (%lld %s of %lld, %lld tokens scored)\n", r->ppl,
                r->ppl_stderr, (long long)r->windows, WindowWord(win), (long long)win.ctx,
                (long long)r->scored_tokens);
    std::printf("base log-probabilities saved to %s (%.1f MB)\n", a.save_base_logits.c_str(),
                ec ? 0.0 : double(bytes) / 1e6);
  }
  return 0;
}

int RunKld(const EvalArgs& a) {
  const bool from_file = !a.base_logits.empty(), saving = !a.save_base_logits.empty();
  if (from_file && saving)
    return FailFlags(Err("--base-logits and --save-base-logits exclude each other"));
  if (from_file && a.models.size() != 1)
    return FailFlags(Err("with --base-logits FILE give only OTHER, the model to compare"));
  if (!from_file && a.models.size() != 2 && !saving)
    return FailFlags(
        Err("kld needs BASE and OTHER (or BASE --save-base-logits FILE, or "
            "--base-logits FILE OTHER)"));
  if (Status st = CheckWindowFlags(a); !st.ok()) return FailFlags(st.error());
  const int threads = ApplyThreads(a.common);
  if (!from_file && a.models.size() == 1) return RunSaveOnly(a, threads);

  std::optional<eval::BaseLogitsReader> reader;
  if (from_file) {
    auto opened = eval::BaseLogitsReader::Open(a.base_logits);
    if (!opened.ok()) return Fail(opened.error());
    reader.emplace(std::move(*opened));
  }
  std::optional<LoadedModel> base;
  if (!from_file) {
    auto loaded = LoadModelAndTokenizer(a.models[0]);
    if (!loaded.ok()) return Fail(loaded.error());
    base.emplace(std::move(*loaded));
  }
  const std::string& other_path = from_file ? a.models[0] : a.models[1];
  auto other = LoadModelAndTokenizer(other_path);
  if (!other.ok()) return Fail(other.error());
  // The text is tokenized with BASE's tokenizer (OTHER's when BASE comes from a file: the
  // file's token hash then checks that both read the text the same way).
  const LoadedModel& tok_model = base ? *base : *other;
  eval::WindowOptions win = a.win;
  bool add_bos = false;
  auto tokens =
      PrepareTokens(a, base ? a.models[0] : other_path, *tok_model.tokenizer, &win, &add_bos);
  if (!tokens.ok()) return Fail(tokens.error());
  const int64_t ctx_limit =
      base ? std::min(base->model.config().max_position, other->model.config().max_position)
           : other->model.config().max_position;
  auto windows = eval::CountWindows(int64_t(tokens->size()), win, ctx_limit);
  if (!windows.ok()) return Fail(windows.error().Context(a.text));
  ProgressBar pb("kld", *windows, ShowProgress(a.common));
  auto progress = [&](int64_t d, int64_t) { pb.Update(d); };
  auto r = reader ? eval::KlDivergence(*reader, other->model, *tokens, win, progress)
                  : eval::KlDivergence(base->model, other->model, *tokens, win, progress,
                                       a.save_base_logits);
  pb.Finish();
  if (!r.ok()) return Fail(r.error());
  if (a.common.json) {
    nlohmann::json j = {{"base", from_file ? a.base_logits : a.models[0]},
                        {"other", other_path},
                        {"text", a.text},
                        {"ctx", win.ctx},
                        {"threads", threads},
                        {"kld_mean", r->kld_mean},
                        {"kld_stderr", r->kld_stderr},
                        {"kld_median", r->kld_median},
                        {"kld_p99", r->kld_p99},
                        {"kld_max", r->kld_max},
                        {"top1_agreement", r->top1_agreement},
                        {"base_ppl", PplJson(r->base)},
                        {"other_ppl", PplJson(r->other)}};
    AddScoringJson(j, win, add_bos);
    if (from_file) j["base_logits"] = a.base_logits;
    if (saving) j["saved_base_logits"] = a.save_base_logits;
    PrintJson(j);
  } else {
    std::printf("%s %lld of %lld tokens, %lld tokens scored%s\n", WindowWord(win),
                (long long)r->base.windows, (long long)win.ctx, (long long)r->base.scored_tokens,
                win.scoring == eval::Scoring::kLlamaCpp ? ", llama.cpp scoring" : "");
    std::printf("PPL base  = %.4f +/- %.4f%s%s\n", r->base.ppl, r->base.ppl_stderr,
                from_file ? "  (from " : "", from_file ? (a.base_logits + ")").c_str() : "");
    std::printf("PPL other = %.4f +/- %.4f\n", r->other.ppl, r->other.ppl_stderr);
    std::printf("KLD mean = %.6f +/- %.6f, median %.6f, p99 %.6f, max %.6f\n", r->kld_mean,
                r->kld_stderr, r->kld_median, r->kld_p99, r->kld_max);
    std::printf("top-1 agreement = %.3f%%\n", 100.0 * r->top1_agreement);
    if (saving) std::printf("base log-probabilities saved to %s\n", a.save_base_logits.c_str());
  }
  return 0;
}

Status WriteFile(const std::string& path, const std::string& text) {
  QF_ASSIGN(AtomicFile f, AtomicFile::Create(path));
  QF_TRY(f.Write(text));
  return f.Commit();
}

// Runs gnuplot on `script` (its outputs are temporary names, renamed here when it succeeds).
// Returns false, with a warning, where gnuplot is missing or fails.
bool RunGnuplot(const std::string& script) {
  FILE* p = popen("gnuplot 2>&1", "w");
  if (!p) return false;
  std::fwrite(script.data(), 1, script.size(), p);
  return pclose(p) == 0;
}

int RunCompare(const EvalArgs& a) {
  if (a.models.size() < 2) return FailFlags(Err("compare needs BASE and at least one MODEL"));
  if (Status st = CheckWindowFlags(a); !st.ok()) return FailFlags(st.error());
  const int threads = ApplyThreads(a.common);
  const bool bench = a.bench.prompt > 0 || a.bench.gen > 0;
  std::vector<eval::CompareRow> rows;
  auto row_of = [&](const std::string& path, const model::Model& m) {
    eval::CompareRow r;
    r.path = path;
    std::filesystem::path p(path);
    r.label = (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
    r.file_bytes = m.file_bytes();
    r.params = m.parameter_count();
    r.bits_per_weight = r.params ? double(r.file_bytes) * 8.0 / double(r.params) : 0.0;
    return r;
  };
  auto run_bench = [&](const model::Model& m, eval::CompareRow* r) -> Status {
    if (!bench) return Status::Ok();
    QF_ASSIGN(r->bench, eval::RunBench(m, a.bench));
    r->benched = true;
    return Status::Ok();
  };
  auto grown = [](const RssBytes& before, const RssBytes& peak) {
    return std::max<int64_t>(0, peak.anon - before.anon) +
           std::max<int64_t>(0, peak.file - before.file);
  };

  // The base stays loaded: every other model is scored against it window by window.
  const RssBytes before_base = CurrentRss();
  std::unique_ptr<RssWatch> watch = std::make_unique<RssWatch>();
  auto base = LoadModelAndTokenizer(a.models[0]);
  if (!base.ok()) return Fail(base.error());
  eval::WindowOptions win = a.win;
  bool add_bos = false;
  auto tokens = PrepareTokens(a, a.models[0], *base->tokenizer, &win, &add_bos);
  if (!tokens.ok()) return Fail(tokens.error());
  rows.push_back(row_of(a.models[0], base->model));
  if (Status st = run_bench(base->model, &rows[0]); !st.ok()) return Fail(st.error());
  rows[0].memory_bytes = grown(before_base, watch->Peaks());

  for (size_t i = 1; i < a.models.size(); ++i) {
    const RssBytes before = CurrentRss();
    watch = std::make_unique<RssWatch>();
    auto other = model::Model::Load(a.models[i]);
    if (!other.ok()) return Fail(other.error());
    eval::CompareRow r = row_of(a.models[i], *other);
    const int64_t ctx_limit =
        std::min(base->model.config().max_position, other->config().max_position);
    auto windows = eval::CountWindows(int64_t(tokens->size()), win, ctx_limit);
    if (!windows.ok()) return Fail(windows.error().Context(a.text));
    ProgressBar pb("compare " + r.label, *windows, ShowProgress(a.common));
    auto kld = eval::KlDivergence(base->model, *other, *tokens, win,
                                  [&](int64_t d, int64_t) { pb.Update(d); });
    pb.Finish();
    if (!kld.ok()) return Fail(kld.error().Context(a.models[i]));
    if (i == 1) rows[0].ppl = kld->base;
    r.ppl = kld->other;
    r.kld_mean = kld->kld_mean;
    r.kld_stderr = kld->kld_stderr;
    r.top1 = kld->top1_agreement;
    if (Status st = run_bench(*other, &r); !st.ok()) return Fail(st.error());
    r.memory_bytes = grown(before, watch->Peaks());
    rows.push_back(std::move(r));
  }

  const std::string md = eval::CompareMarkdown(rows);
  const nlohmann::json j = {{"text", a.text},
                            {"ctx", win.ctx},
                            {"threads", threads},
                            {"prompt", bench ? a.bench.prompt : 0},
                            {"gen", bench ? a.bench.gen : 0},
                            {"models", eval::CompareJson(rows)}};
  if (!a.output.empty()) {
    if (Status st = WriteFile(a.output + ".md", md); !st.ok()) return Fail(st.error());
    if (Status st = WriteFile(a.output + ".json", j.dump(2) + "\n"); !st.ok())
      return Fail(st.error());
    // gnuplot writes temporary names; they replace the plots only when it succeeds.
    const std::string q = a.output + "-quality.svg", sp = a.output + "-speed.svg";
    const std::string qt = q + ".tmp", st = sp + ".tmp";
    if (RunGnuplot(eval::CompareGnuplot(rows, qt, st))) {
      std::error_code ec;
      std::filesystem::rename(qt, q, ec);
      if (bench) std::filesystem::rename(st, sp, ec);
    } else {
      std::error_code ec;
      std::filesystem::remove(qt, ec);
      std::filesystem::remove(st, ec);
      std::fprintf(stderr,
                   "qforge: warning: gnuplot did not run (apt install gnuplot-nox): plots "
                   "skipped\n");
    }
  }
  if (a.common.json) {
    PrintJson(j);
  } else {
    std::printf("%s of %lld tokens of %s, %d threads\n\n%s", WindowWord(win), (long long)win.ctx,
                a.text.c_str(), threads, md.c_str());
    if (!a.output.empty())
      std::printf("\nwrote %s.md, %s.json and the plots %s-quality.svg%s\n", a.output.c_str(),
                  a.output.c_str(), a.output.c_str(),
                  bench ? (", " + a.output + "-speed.svg").c_str() : "");
  }
  return 0;
}

}  // namespace

void RegisterCompare(CLI::App& app, int* rc) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "before/after table: size, bits/weight, PPL, KLD and top-1 against BASE, speed, memory");
  cmd->add_option("models", a->models, "BASE MODEL... (folders or .gguf files)")
      ->required()
      ->expected(1, 64);            // one alone: the handler's error names what is missing
  AddBenchOptions(cmd, &a->bench);  // -p 0 -n 0: no speed columns
  cmd->add_option("-o,--output", a->output,
                  "also write PREFIX.md, PREFIX.json, PREFIX-quality.svg and PREFIX-speed.svg "
                  "(plots by gnuplot)");
  AddWindowOptions(cmd, a.get());
  cmd->callback([a, rc] { *rc = RunCompare(*a); });
}

void RegisterPpl(CLI::App& app, int* rc) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity of a model on a text file");
  cmd->add_option("model", a->models, "model folder")->required()->expected(1);
  AddWindowOptions(cmd, a.get());
  cmd->callback([a, rc] { *rc = RunPpl(*a); });
}

void RegisterKld(CLI::App& app, int* rc) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "kld", "KL divergence of OTHER's next-token distribution from BASE's, top-1 agreement");
  cmd->add_option("models", a->models,
                  "BASE OTHER; BASE alone with --save-base-logits; OTHER alone with "
                  "--base-logits")
      ->required()
      ->expected(1, 2);
  cmd->add_option("--save-base-logits", a->save_base_logits,
                  "also write BASE's log-probabilities to FILE (uint16 codes, ~2 bytes per "
                  "vocabulary entry per scored token)");
  cmd->add_option("--base-logits", a->base_logits,
                  "read BASE's log-probabilities from FILE (saved with --save-base-logits) "
                  "instead of running BASE");
  AddWindowOptions(cmd, a.get());
  cmd->callback([a, rc] { *rc = RunKld(*a); });
}

}  // namespace qf::cli
