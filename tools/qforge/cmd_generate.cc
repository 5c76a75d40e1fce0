// `qforge generate MODEL -p PROMPT`: streams sampled text and reports prompt/generation speed.
#include <cstdio>

#include "common.h"
#include "eval/generate.h"

namespace qf::cli {
namespace {

struct GenerateArgs {
  std::string model, prompt;
  int64_t n = 64;
  model::SamplingOptions sampling;
  CommonOptions common;
};

int RunGenerate(const GenerateArgs& a) {
  const int threads = ApplyThreads(a.common);
  auto lm = LoadModelAndTokenizer(a.model);
  if (!lm.ok()) return Fail(lm.error());
  const text::Tokenizer& tok = *lm->tokenizer;
  std::vector<int32_t> prompt = tok.Encode(a.prompt, /*add_bos=*/tok.bos_id() >= 0);
  if (prompt.empty()) return Fail(Err("the prompt tokenizes to nothing"));
  std::string generated;
  std::vector<int32_t> out_ids;
  if (!a.common.json) {
    std::printf("%s", a.prompt.c_str());
    std::fflush(stdout);
  }
  auto st = eval::Generate(lm->model, prompt, a.n, a.sampling, tok.eos_id(), [&](int32_t id) {
    out_ids.push_back(id);
    if (id == tok.eos_id()) return;
    const std::string piece = tok.DecodeToken(id);
    generated += piece;
    if (!a.common.json) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    }
  });
  if (!st.ok()) return Fail(st.error());
  const double pps = double(st->prompt_tokens) / std::max(st->prompt_seconds, 1e-9);
  const double gps = double(st->generated_tokens) / std::max(st->generate_seconds, 1e-9);
  if (a.common.json) {
    PrintJson({{"prompt", a.prompt},
               {"text", generated},
               {"prompt_ids", prompt},
               {"generated_ids", out_ids},
               {"prompt_tokens", st->prompt_tokens},
               {"generated_tokens", st->generated_tokens},
               {"prompt_tokens_per_second", pps},
               {"generation_tokens_per_second", gps},
               {"threads", threads}});
  } else {
    std::printf("\n");
    std::fflush(stdout);  // the text ends before the stats line, even when both are piped
    std::fprintf(
        stderr,
        "prompt: %lld tokens, %.1f tokens/s; generation: %lld tokens, %.1f tokens/s (%d threads)\n",
        (long long)st->prompt_tokens, pps, (long long)st->generated_tokens, gps, threads);
  }
  return 0;
}

}  // namespace

void RegisterGenerate(CLI::App& app, int* rc) {
  auto a = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "generate text from a prompt");
  cmd->add_option("model", a->model, "model folder")->required();
  cmd->add_option("-p,--prompt", a->prompt, "prompt text")->required();
  cmd->add_option("-n,--n-predict", a->n, "tokens to generate")
      ->capture_default_str()
      ->check(IntegerIn(0, kMaxTokens));
  cmd->add_option("--temp", a->sampling.temperature, "temperature (0 = greedy)")
      ->capture_default_str()
      ->check(NumberIn(0.0, 100.0));
  cmd->add_option("--top-k", a->sampling.top_k, "keep the K most likely tokens (0 = all)")
      ->capture_default_str()
      ->check(IntegerIn(0, kNoMax, "0 = all"));
  cmd->add_option("--top-p", a->sampling.top_p, "nucleus sampling threshold (1 = off)")
      ->capture_default_str()
      ->check(NumberIn(0.0, 1.0));
  cmd->add_option("--seed", a->sampling.seed, "random seed")->capture_default_str()->check(Seed());
  AddCommonOptions(cmd, &a->common);
  cmd->callback([a, rc] { *rc = RunGenerate(*a); });
}

}  // namespace qf::cli
